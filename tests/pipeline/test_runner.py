from pipeline.core.config import RunConfig
from pipeline.runner import fingerprint, stage


def test_fine_tuning_settings_change_the_prune_stage_only_when_iterative(tmp_path):
    prune = stage("prune")
    one_shot = [fingerprint(RunConfig(distill_epochs=e), tmp_path, prune, None) for e in (0, 3)]
    assert one_shot[0] == one_shot[1]  # distillation runs after prune: prune need not re-run
    iterative = [fingerprint(RunConfig(iterative=True, distill_epochs=e), tmp_path, prune, None) for e in (1, 3)]
    assert iterative[0] != iterative[1]  # iterative pruning fine-tunes inside the prune stage
    assert fingerprint(RunConfig(ratio=0.3), tmp_path, prune, None) != one_shot[0]
