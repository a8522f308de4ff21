import pytest

from pipeline.core.config import RunConfig
from pipeline.runner import fingerprint
from pipeline.stages import stage


def test_fine_tuning_settings_change_the_prune_stage_only_when_iterative(tmp_path):
    prune = stage("prune")
    one_shot = [fingerprint(RunConfig(distill_epochs=e), tmp_path, prune, None) for e in (0, 3)]
    assert one_shot[0] == one_shot[1]  # distillation runs after prune: prune need not re-run
    iterative = [fingerprint(RunConfig(iterative=True, distill_epochs=e), tmp_path, prune, None) for e in (1, 3)]
    assert iterative[0] != iterative[1]  # iterative pruning fine-tunes inside the prune stage
    assert fingerprint(RunConfig(ratio=0.3), tmp_path, prune, None) != one_shot[0]


def test_a_scorer_reruns_only_for_the_settings_it_declares(tmp_path):
    score = stage("score")

    def key(**values):
        return fingerprint(RunConfig(**values), tmp_path, score, None)

    # C-SWAP's interventions and progressive removal read these; L1 reads none of them
    for setting in ({"max_acc_drop": 0.01}, {"compensate": "mean"}, {"max_unit_ratio": 0.5}):
        assert key(scorer="cswap", **setting) != key(scorer="cswap")
        assert key(scorer="l1", **setting) == key(scorer="l1")
    assert key(scorer="snip", snip_at_init=True) != key(scorer="snip")
    assert key(scorer="cswap", macs_reduction=2.0) == key(scorer="cswap")  # the budget is the prune stage's


def test_a_stage_out_of_memory_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    from pipeline.core.errors import ResourceError
    from pipeline.runner import run_stage
    from pipeline.stages import calibrate

    def exhausted(ctx):
        (ctx.out / "stats.partial").write_text("half")
        raise MemoryError()

    monkeypatch.setattr(calibrate, "run", exhausted)
    with pytest.raises(ResourceError, match=r"^\[calibrate\] ran out of memory .*lower --batch-size"):
        run_stage(RunConfig(), tmp_path, "calibrate")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("damage", ["delete", "truncate", "edit"])
def test_a_finished_stage_whose_output_was_damaged_runs_again(tmp_path, monkeypatch, capsys, damage):
    from pipeline.runner import run_stage
    from pipeline.stages import calibrate

    runs = []

    def writes_stats(ctx):
        runs.append(1)
        (ctx.out / "stats.safetensors").write_bytes(b"0123456789")

    monkeypatch.setattr(calibrate, "run", writes_stats)
    assert run_stage(RunConfig(), tmp_path, "calibrate") and not run_stage(RunConfig(), tmp_path, "calibrate")
    assert "up to date, skipped" in capsys.readouterr().err
    output = tmp_path / "calibrate" / "stats.safetensors"
    {
        "delete": output.unlink,
        "truncate": lambda: output.write_bytes(b"01234"),
        "edit": lambda: output.write_bytes(b"0123456780"),
    }[damage]()
    assert run_stage(RunConfig(), tmp_path, "calibrate") and len(runs) == 2
    said = {"delete": "is missing", "truncate": "changed size", "edit": "changed"}[damage]
    assert f"[calibrate] its outputs changed since it ran (stats.safetensors {said}): running it again" in capsys.readouterr().err
    assert output.read_bytes() == b"0123456789"
