"""Which units of a model can be removed: the dependency groups of the inference forward, less
what is kept whole (stem, classifier, --keep-layers, whatever couples with those), each group
confirmed by trial removal.

The stem's outputs are a small share of the MACs, so a MACs budget gains little from them and cuts them
blindly; a latency budget weighs each layer's measured time, and the stem's outputs are the widest
activations of the network (on CPUs its layers take a larger share of the time than of the MACs), so
under a latency budget they are a group like any other.

Tracing cannot see what a model's code hard-codes: a channel count (the zero-padding shortcut of
CIFAR ResNets), a head count or width in a reshape (many attention and metaformer blocks). Removal
then either breaks the forward or silently mixes channels up. So two units of every group are
removed from a copy, and the output must equal the dense model's with those units cut off from
their consumers; a group for which it does not is kept whole, with the reason in the notes."""

from __future__ import annotations

import fnmatch
import gc
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from pipeline.core.errors import ModelError, is_out_of_memory
from pipeline.models.clone import clone_model
from pipeline.pruning.heads import is_head_attention
from pipeline.pruning.surgery import (
    UnitGroup,
    _convert_group,
    _head_group,
    apply_removal,
    build_graph,
    call_order,
    drop_modules,
    execution_order,
    torch2_graph_fixes,
    unreached_modules,
)


@dataclass
class Analysis:
    groups: list[UnitGroup]
    notes: list[str]  # what could not be pruned and why, for the report
    stem: str
    classifier: str
    dropped: list[str] = field(default_factory=list)  # modules the inference forward never reaches


def analyse(model: nn.Module, example: torch.Tensor, keep_patterns: tuple[str, ...] = (), keep_stem: bool = True) -> Analysis:
    """All prunable unit groups of `model` (not modified), the classifier (and with `keep_stem` the stem) excluded."""
    calls = call_order(model, example)
    order = execution_order(model, example, calls)
    if not order:
        raise ModelError("the model has no Conv2d or Linear layer to prune")
    stem, classifier = order[0], order[-1]
    kept_whole = {stem, classifier} if keep_stem else {classifier}
    kept_whole |= {n for n, _ in model.named_modules() if any(fnmatch.fnmatch(n, p) for p in keep_patterns)}
    dropped, notes = _left_out(model, example, set(calls))
    if dropped:  # the graph and every check below see the model as it will be deployed
        model = clone_model(model)
        drop_modules(model, dropped)
    with torch2_graph_fixes():
        try:
            graph = build_graph(model, example)
        except Exception as err:  # tracing failures carry the layer in their message
            if is_out_of_memory(err):
                raise
            raise ModelError(f"the dependency graph cannot follow this model: {str(err).splitlines()[0]}") from None
        candidates = []
        for group in graph.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
            unit_group, reason = _convert_group(graph, group)
            if unit_group is None:
                notes.append(reason)
            elif unit_group.size >= 2 and unit_group.producers != [classifier]:  # the class outputs are never pruned
                candidates.append(unit_group)
    del graph
    for name, module in model.named_modules():
        if is_head_attention(module) and module.num_heads > 1 and not (kept_whole & {name, f"{name}.qkv", f"{name}.proj"}):
            candidates.append(_head_group(name, module))
    candidates, broken = confirm_by_trial(model, example, candidates)
    notes += broken
    groups = []
    for unit_group in candidates:
        blocked = sorted(set(unit_group.producers) & kept_whole)
        if blocked:
            role = "the stem" if stem in blocked else ("--keep-layers " + ", ".join(blocked))
            shown = ", ".join(unit_group.producers[:4]) + (", ..." if len(unit_group.producers) > 4 else "")
            notes.append(f"{unit_group.name}: coupled with {role} ({shown}), kept whole")
        else:
            groups.append(unit_group)
    return Analysis(groups, notes, stem, classifier, dropped)


def _left_out(model: nn.Module, example: torch.Tensor, reached: set[str]) -> tuple[list[str], list[str]]:
    """Modules the inference forward never reaches, when removing them changes nothing."""
    unreached = unreached_modules(model, reached)
    if not unreached:
        return [], []
    probe = clone_model(model)
    drop_modules(probe, unreached)
    try:
        with torch.no_grad():
            same = torch.equal(probe(example), model(example))
    except Exception as err:
        if is_out_of_memory(err):
            raise
        same = False
    if not same:
        return [], [
            f"{', '.join(unreached)}: not reached by the inference forward, but removing them changes it; kept as they are"
        ]
    return unreached, [
        f"{', '.join(unreached)}: not reached by the inference forward (a training-only head), "
        "left out of pruning and removed from the pruned model"
    ]


def _mixes_channels(group: UnitGroup, model: nn.Module) -> bool:
    """Norms over the channel axis (LayerNorm, GroupNorm) make zeroing a channel differ from removing it."""
    return any(isinstance(model.get_submodule(p.module), (nn.LayerNorm, nn.GroupNorm)) for p in group.params)


def _trial_units(group: UnitGroup) -> list[int]:
    return sorted({0, group.size // 2 + 1} & set(range(group.size - 1)))


def confirm_by_trial(model: nn.Module, example: torch.Tensor, groups: list[UnitGroup]) -> tuple[list[UnitGroup], list[str]]:
    """The groups whose trial removal is exact, and a note for each other one. All groups are tried
    at once; only when that fails is the set split in halves until the culprits are found."""
    failures: dict[str, str] = {}

    def search(trial: list[UnitGroup]) -> None:
        problem = _trial_problem(model, example, groups, trial)
        if problem is None:
            return
        if len(trial) == 1:
            failures[trial[0].name] = problem
            return
        half = len(trial) // 2
        search(trial[:half])
        search(trial[half:])

    # norms over channels make removal differ from masking: those groups are tried on their own
    for kind in ([g for g in groups if not _mixes_channels(g, model)], [g for g in groups if _mixes_channels(g, model)]):
        if not kind:
            continue
        search(kind)
        rest = [g for g in kind if g.name not in failures]
        if len(rest) < len(kind) and rest and _trial_problem(model, example, groups, rest) is not None:
            for group in rest:  # groups that fail only together: try each alone
                problem = _trial_problem(model, example, groups, [group])
                if problem is not None:
                    failures[group.name] = problem
    notes = [_failure_note(g, failures[g.name]) for g in groups if g.name in failures]
    return [g for g in groups if g.name not in failures], notes


def _failure_note(group: UnitGroup, problem: str) -> str:
    shown = ", ".join(group.producers[:3]) + (", ..." if len(group.producers) > 3 else "")
    what = {"channel": f"channel count of {shown}", "neuron": f"width of {shown}"}.get(group.kind, f"head count of {group.name}")
    if problem == "inexact":
        return (
            f"{group.name}: the model's forward hard-codes the {what} (e.g. a zero-padding shortcut or a reshape): "
            "removing units is not exact; kept whole"
        )
    return f"{group.name}: the model's forward hard-codes the {what}: removing units breaks it ({problem}); kept whole"


def _trial_problem(model: nn.Module, example: torch.Tensor, groups: list[UnitGroup], trial: list[UnitGroup]) -> str | None:
    """None when removing the trial units of `trial` gives what cutting them off gives, else why not."""
    probe = clone_model(model).eval()
    try:
        return _compare_removal(probe, model, example, groups, trial)
    finally:
        # the dependency graph and the probe reference each other: free them now, not at the next
        # collection, or every trial of a large model adds a copy of it to the peak
        del probe
        gc.collect()


def _compare_removal(probe: nn.Module, model: nn.Module, example: torch.Tensor, groups, trial) -> str | None:
    exact = not any(_mixes_channels(g, model) for g in trial)
    try:
        with torch.no_grad():
            for group in trial if exact else []:
                units = set(_trial_units(group))
                for consumer in group.consumers:
                    if not consumer.depthwise:
                        probe.get_submodule(consumer.module).weight[:, consumer.channels_of(units)] = 0.0
            reference = probe(example)
        apply_removal(probe, example, groups, {g.name: _trial_units(g) for g in trial}, check=False)
        with torch.no_grad():
            output = probe(example)
    except Exception as err:
        if is_out_of_memory(err):
            raise  # the machine's limit, not the model's: never a reason to keep a group whole
        return (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    if output.shape != reference.shape:
        return f"output shape {tuple(output.shape)} instead of {tuple(reference.shape)}"
    if not exact:
        return None  # norms over channels: removal cannot equal masking, running is what can be checked
    tolerance = 1e-4 * max(1.0, reference.abs().max().item())
    return None if (output - reference).abs().max().item() <= tolerance else "inexact"
