"""A read never creates a database: searching, counting or deleting in a folder that holds no Chroma database
fails with an error naming the folder and leaves nothing behind; the first write creates it (no weights)."""

from __future__ import annotations

import pytest

from twostage_integrations import ChromaRecall, CollectionNotFoundError, TwoStagePipeline
from twostage_integrations.errors import DatabaseNotFoundError, StorageError
from twostage_integrations.recall.chroma import DB_FILE, make_client

READS = {
    "search": lambda r: r.search("aspirin"),
    "count": lambda r: r.count(),
    "version": lambda r: r.version(),
    "delete": lambda r: r.delete(["a"]),
    "collection": lambda r: r.collection,
    "pipeline": lambda r: TwoStagePipeline(r).search("aspirin"),
}


def listing(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


@pytest.mark.parametrize("read", list(READS))
def test_read_of_a_missing_folder_names_it_and_creates_nothing(tmp_path, fake_embedder, read):
    db = tmp_path / "new" / "folder"
    recall = ChromaRecall("mine", path=db, embedding_model=fake_embedder)
    with pytest.raises(DatabaseNotFoundError) as info:
        READS[read](recall)
    message = str(info.value)
    assert str(db) in message and f"twostage ingest PATH -c mine --db {db}" in message
    assert isinstance(info.value, CollectionNotFoundError)  # callers catching the broader error keep working
    assert listing(tmp_path) == []  # not even the parent folder


def test_read_of_an_empty_folder_leaves_it_empty(tmp_path, fake_embedder):
    recall = ChromaRecall("mine", path=tmp_path, embedding_model=fake_embedder)
    with pytest.raises(DatabaseNotFoundError, match=str(tmp_path)):
        recall.search("aspirin")
    assert listing(tmp_path) == []


def test_path_through_a_file_is_a_storage_error_and_creates_nothing(tmp_path, fake_embedder):
    (tmp_path / "a-file").write_text("not a folder")
    db = tmp_path / "a-file" / "db"
    with pytest.raises(StorageError, match="Chroma folder") as info:
        ChromaRecall("mine", path=db, embedding_model=fake_embedder).search("aspirin")
    assert str(db) in str(info.value)
    assert listing(tmp_path) == [tmp_path.joinpath("a-file").relative_to(tmp_path)]


def test_first_write_creates_the_database_then_reads_work(tmp_path, fake_embedder):
    db = tmp_path / "db"
    recall = ChromaRecall("mine", path=db, embedding_model=fake_embedder)
    with pytest.raises(DatabaseNotFoundError):
        recall.search("aspirin")
    assert recall.add_texts(["Aspirin lowers the risk of stroke."]).added == 1
    assert (db / DB_FILE).is_file()
    assert [h.text for h in recall.search("aspirin", limit=1)] == ["Aspirin lowers the risk of stroke."]
    # a new reader of the now existing database opens it at once and finds the passage
    assert ChromaRecall("mine", path=db, embedding_model=fake_embedder).count() == 1


def test_database_made_by_another_writer_after_construction_is_found(tmp_path, fake_embedder):
    db = tmp_path / "db"
    reader = ChromaRecall("mine", path=db, embedding_model=fake_embedder)
    ChromaRecall("mine", path=db, embedding_model=fake_embedder).add_texts(["Statins lower cholesterol."])
    assert reader.count() == 1


def test_missing_collection_in_an_existing_database_names_the_folder(tmp_path, fake_embedder):
    db = tmp_path / "db"
    ChromaRecall("other", path=db, embedding_model=fake_embedder).add_texts(["x y z"])
    with pytest.raises(CollectionNotFoundError) as info:
        ChromaRecall("mine", path=db, embedding_model=fake_embedder).search("aspirin")
    assert not isinstance(info.value, DatabaseNotFoundError)
    assert f"collection 'mine' does not exist in the Chroma database at {db}" in str(info.value)
    assert f"twostage ingest PATH -c mine --db {db}" in str(info.value)


def test_asking_for_the_client_creates_the_database(tmp_path, fake_embedder):
    db = tmp_path / "db"
    recall = ChromaRecall("mine", path=db, embedding_model=fake_embedder)
    assert recall.client.list_collections() == []  # a client you asked for is a working one
    assert (db / DB_FILE).is_file()


def test_bm25_and_hybrid_over_a_missing_folder_create_nothing(tmp_path, fake_embedder):
    pytest.importorskip("bm25s")
    from twostage_integrations.recall.factory import recall_by_kind

    db = tmp_path / "db"
    for kind in ("bm25", "hybrid"):
        recall = recall_by_kind(kind, ChromaRecall("mine", path=db, embedding_model=fake_embedder))
        with pytest.raises(DatabaseNotFoundError, match=str(db)):
            recall.search("aspirin")
    assert listing(tmp_path) == []
    bm25 = recall_by_kind("bm25", ChromaRecall("mine", path=db, embedding_model=fake_embedder))
    assert bm25.index_dir == db / "bm25" / "mine"  # beside the database, once a write creates it


def test_make_client_opens_only_an_existing_database_when_asked(tmp_path):
    with pytest.raises(DatabaseNotFoundError, match=str(tmp_path / "db")):
        make_client(path=tmp_path / "db", create=False)
    assert listing(tmp_path) == []
    make_client(path=tmp_path / "db")  # a write's client: creates the database
    assert (tmp_path / "db" / DB_FILE).is_file()
    assert make_client(path=tmp_path / "db", create=False).list_collections() == []
