import json

import pytest

from pipeline.core.artifacts import MANIFEST, StageWriter, read_manifest, sha256_json


def test_manifest_is_written_last_and_lists_outputs(tmp_path):
    with StageWriter(tmp_path / "stage", "stage", {"a": 1}, "fp") as writer:
        (writer.path / "out.txt").write_text("hello")
        assert not (tmp_path / "stage").exists()  # nothing visible until complete
    manifest = read_manifest(tmp_path / "stage")
    assert manifest["fingerprint"] == "fp" and "out.txt" in manifest["outputs"]
    assert manifest["outputs_digest"] == sha256_json(manifest["outputs"])


def test_failure_leaves_the_previous_complete_directory(tmp_path):
    with StageWriter(tmp_path / "stage", "stage", {}, "first") as writer:
        (writer.path / "out.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with StageWriter(tmp_path / "stage", "stage", {}, "second") as writer:
            (writer.path / "out.txt").write_text("half")
            raise RuntimeError("boom")
    assert (tmp_path / "stage" / "out.txt").read_text() == "v1"
    assert json.loads((tmp_path / "stage" / MANIFEST).read_text())["fingerprint"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]  # no temporary directory left


def test_a_directory_without_manifest_is_not_complete(tmp_path):
    (tmp_path / "stage").mkdir()
    assert read_manifest(tmp_path / "stage") is None
