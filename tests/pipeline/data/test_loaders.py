from pipeline.data import loaders


def test_default_workers_share_the_cores_and_skip_small_or_in_memory_loaders(monkeypatch):
    monkeypatch.setattr(loaders, "available_cores", lambda: 16)
    assert loaders.default_workers(batches=100, in_memory=False) == 8  # at most 8
    assert loaders.default_workers(batches=100, in_memory=False, processes_here=4) == 3  # 16 / 4, one left to training
    assert loaders.default_workers(batches=100, in_memory=True) == 0  # tensors already in memory
    assert loaders.default_workers(batches=loaders.MIN_BATCHES_FOR_WORKERS - 1, in_memory=False) == 0
    monkeypatch.setattr(loaders, "available_cores", lambda: 1)
    assert loaders.default_workers(batches=100, in_memory=False) == 0
