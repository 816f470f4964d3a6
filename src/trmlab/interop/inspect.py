"""``trmlab checkpoint inspect``: what a checkpoint holds and every way its shapes disagree with its
config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from trmlab.errors import CheckpointError, TrmlabError
from trmlab.interop.official_keys import TABLE_KEY, canonical_to_official, detect_prefix
from trmlab.interop.research_keys import is_research_state

BUFFERS = ("core.h_init", "core.l_init")
CODE_BESIDE = ("trm.py", "losses.py")


@dataclasses.dataclass
class Inspection:
    """The facts ``checkpoint inspect`` prints (also usable from Python)."""

    path: str
    format: str
    tensors: list[tuple[str, str, list[int], str]]  # canonical key, stored key, shape, dtype
    parameters: int
    table_entries: int
    inferred: dict[str, Any]
    architecture: dict[str, Any] | None
    architecture_source: str
    inconsistencies: list[str]
    notes: list[str]


def _shapes_from_state(state: dict[str, torch.Tensor]) -> dict[str, tuple[list[int], str]]:
    return {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}


def inspect_checkpoint(path: str | Path, config: Any = None, seq_len: int | None = None) -> Inspection:
    """Inspect an official ``step_N`` file (with or without all_config.yaml) or a trmlab checkpoint."""
    from trmlab.checkpoints.bundle import is_trmlab_checkpoint
    from trmlab.interop.hub import resolve_path

    path = Path(resolve_path(path))  # an hf:// path: fetched through the Hugging Face cache
    if path.is_dir():
        if not is_trmlab_checkpoint(path):
            raise CheckpointError(f"{path} is a directory without manifest.json: not a (complete) trmlab "
                                  "checkpoint")
        return _inspect_trmlab(path, config, seq_len)
    return _inspect_official(path, config, seq_len)


def _inspect_official(path: Path, config: Any, seq_len: int | None) -> Inspection:
    from trmlab.interop.loading import checked_state_dict, official_config
    from trmlab.interop.official_keys import strip_official
    from trmlab.interop.safe_load import safe_torch_load

    raw = checked_state_dict(safe_torch_load(path, mmap=True), path)
    notes = [f"ignored, never imported: {name} beside the checkpoint" for name in CODE_BESIDE
             if (path.parent / name).exists()]
    has_config = (path.parent / "all_config.yaml").is_file()
    conflicts: list[str] = []
    if has_config:
        resolved, source = official_config(path), "all_config.yaml beside the file"
        conflicts = _conflicts(resolved, config, path)
    elif config is not None:
        resolved, source = official_config(path, config), "given with preset= / key=value"
    else:
        resolved, source = None, "unknown: no all_config.yaml beside the file and no preset= / key=value"
    if is_research_state(list(raw)):
        return _inspect_research(path, raw, resolved, source, seq_len, notes, conflicts)
    prefix = detect_prefix(list(raw))
    state = strip_official(raw, str(path))
    shapes = _shapes_from_state(state)
    stored_keys = {canonical: prefix + (canonical_to_official(canonical) or "?") for canonical in shapes}
    report = _report(path, f"official torch.save state dict (key prefix {prefix!r})", shapes, stored_keys,
                     resolved, source, seq_len, notes)
    report.inconsistencies += conflicts
    return report


ETRMTRM_TRAINING_NOTE = (
    "training differs from the research code on purpose: it detached the recurrent encoder's carry and read "
    "the context from it, so no task-loss gradient ever reached an encoder parameter (etrm-reference §5, "
    "§9.5); trmlab keeps the gradient of the step's context (evaluation numerics are the same)")


def _inspect_research(path: Path, raw: dict[str, torch.Tensor], resolved: Any, source: str,
                      seq_len: int | None, notes: list[str], conflicts: list[str]) -> Inspection:
    """A research ETRM/ETRMTRM ``step_N``: keys through the research map, notes on what differs on purpose."""
    from trmlab.config.diff import is_research_config, research_drift
    from trmlab.interop.loading import research_config
    from trmlab.interop.research_keys import canonical_to_research, family_of, research_prefix, strip_research

    keys = list(raw)
    prefix = research_prefix(keys, str(path))
    if resolved is None:
        raise CheckpointError(f"{path} is a research ETRM checkpoint without all_config.yaml beside it: "
                              "name its architecture (preset=etrm-arc1, plus key=value overrides), since the "
                              "encoder type decides how its keys map")
    resolved = research_config(path, None if source.startswith("all_config") else resolved)
    family = family_of(resolved.config.arch)
    state = strip_research(raw, family, str(path))
    stored = {key: prefix + (canonical_to_research(key, family) or "?") for key in state}
    notes = [*notes, f"research-code checkpoint ({family}): trmlab builds it with arch.encoder_numerics="
             "research, which computes what the research code computes; rows without any demo get a zero "
             "context instead of the research code's NaN"]
    if resolved.config.arch.name == "etrmtrm":
        notes.append(ETRMTRM_TRAINING_NOTE)
    if is_research_config(resolved.config):
        notes += [f"drift: {line}" for line in research_drift(resolved.config)]
    shapes = _shapes_from_state(state)
    report = _report(path, f"research torch.save state dict (key prefix {prefix!r})", shapes, stored,
                     resolved, source, seq_len, notes)
    report.inconsistencies += conflicts
    return report


def _conflicts(stored: Any, config: Any, path: Path) -> list[str]:
    """The user's config against the checkpoint's own (the loaders' error, reported instead of raised)."""
    if config is None:
        return []
    from trmlab.interop.loading import reconcile_architecture

    try:
        reconcile_architecture(stored, config, False, str(path))
    except CheckpointError as error:
        return [f"your config conflicts with the checkpoint's architecture:\n{error}"]
    return []


def _inspect_trmlab(path: Path, config: Any, seq_len: int | None) -> Inspection:
    from trmlab.checkpoints.bundle import EMA_FILE, MODEL_FILE, TABLE_FILE, read_checkpoint

    notes, checksum_problems = [], []
    try:
        bundle = read_checkpoint(path, verify=True)
        notes.append("checksums: every file matches manifest.json")
    except CheckpointError as error:
        bundle = read_checkpoint(path, verify=False)
        checksum_problems.append(f"CHECKSUM PROBLEM: {error}")  # an inconsistency: the exit code says so
    manifest = bundle.manifest
    # What the files hold (their safetensors headers), not what the manifest says they hold.
    stored_files, file_problems = {}, []
    for name in (MODEL_FILE, EMA_FILE, TABLE_FILE):
        if bundle.has(name):
            try:
                stored_files[name] = safetensors_shapes(path / name)
            except CheckpointError as error:
                file_problems.append(str(error))
                continue
            file_problems += _manifest_disagreements(name, stored_files[name], manifest)
    weights = EMA_FILE if EMA_FILE in stored_files else MODEL_FILE
    shapes = dict(stored_files.get(weights, {}))
    if "weights" in stored_files.get(TABLE_FILE, {}):
        shapes[TABLE_KEY] = stored_files[TABLE_FILE]["weights"]
    stored_keys = {k: (f"{TABLE_FILE}:weights" if k == TABLE_KEY else f"{weights}:{k}") for k in shapes}
    notes.append(f"step {manifest.get('step')}, contents {manifest.get('contents')}, trmlab "
                 f"{manifest.get('trmlab_version')} (commit {manifest.get('git_commit')})")
    conflicts: list[str] = []
    try:
        resolved, source = bundle.config(), "config.yaml in the checkpoint"
        conflicts = _conflicts(resolved, config, path)
    except TrmlabError as error:
        resolved, source = None, f"unreadable: {error}"
    length = seq_len or (manifest.get("model") or {}).get("seq_len")
    report = _report(path, f"trmlab checkpoint (format {manifest.get('format_version')})", shapes,
                     stored_keys, resolved, source, length, notes)
    rows = (manifest.get("model") or {}).get("num_puzzle_identifiers")
    if TABLE_KEY in shapes and isinstance(rows, int) and shapes[TABLE_KEY][0][:1] != [rows]:
        file_problems.append(f"{TABLE_FILE}: weights has {shapes[TABLE_KEY][0][0]} rows but the model was "
                             f"built for {rows} puzzle identifiers (manifest.json)")
    if resolved is not None:
        report.inconsistencies += _other_weights_file(stored_files, weights, shapes, resolved, report, length)
        report.inconsistencies += _dtype_problems(stored_files, resolved, report, length)
    report.inconsistencies = checksum_problems + file_problems + report.inconsistencies + conflicts
    return report


SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                      "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                      "BOOL": "bool"}


def safetensors_shapes(path: Path) -> dict[str, tuple[list[int], str]]:
    """{tensor: (shape, dtype)} from a safetensors file's header (the tensors themselves are not read)."""
    import json
    import struct

    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= path.stat().st_size - 8:
                raise ValueError("truncated or not a safetensors file")
            header = json.loads(handle.read(size))
        tensors = {key: info for key, info in header.items() if key != "__metadata__"}
        end = max((int(info["data_offsets"][1]) for info in tensors.values()), default=0)
        if end > path.stat().st_size - 8 - size:
            raise ValueError(f"truncated: its tensors need {end:,} bytes of data, the file holds "
                             f"{path.stat().st_size - 8 - size:,}")
        shapes = {key: (list(info["shape"]), SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"]))
                  for key, info in tensors.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    return shapes


def _manifest_disagreements(name: str, stored: dict[str, tuple[list[int], str]], manifest: dict[str, Any]
                            ) -> list[str]:
    recorded = {k: (v.get("shape"), v.get("dtype")) for k, v in
                ((manifest.get("tensors") or {}).get(name) or {}).items() if isinstance(v, dict)}
    problems = [f"{name}: {key} is stored as {list(stored[key][0])} {stored[key][1]} but manifest.json "
                f"records {recorded[key][0]} {recorded[key][1]}"
                for key in sorted(stored.keys() & recorded.keys()) if tuple(stored[key]) != recorded[key]]
    problems += [f"{name}: {key} is not listed in manifest.json"
                 for key in sorted(stored.keys() - recorded.keys())]
    problems += [f"{name}: {key} is listed in manifest.json but missing from the file"
                 for key in sorted(recorded.keys() - stored.keys())]
    return problems


def _other_weights_file(stored_files: dict[str, Any], checked: str, shapes: dict[str, Any], resolved: Any,
                        report: Inspection, seq_len: int | None) -> list[str]:
    """The raw weights are checked against the config too when the report shows the EMA weights."""
    from trmlab.checkpoints.bundle import MODEL_FILE

    if checked == MODEL_FILE or MODEL_FILE not in stored_files:
        return []
    raw = dict(stored_files[MODEL_FILE])
    if TABLE_KEY in shapes:
        raw[TABLE_KEY] = shapes[TABLE_KEY]
    problems = _consistency(raw, resolved.config, _infer(raw), seq_len)
    return [f"{MODEL_FILE}: {problem}" for problem in problems if problem not in report.inconsistencies]


def _dtype_kind(dtype: str) -> str:
    return "float" if "float" in dtype else "bool" if dtype == "bool" else "integer"


def _dtype_problems(stored_files: dict[str, Any], resolved: Any, report: Inspection, seq_len: int | None
                    ) -> list[str]:
    """Every stored dtype of another kind than the same tensor's in the model the config builds."""
    expected = _expected_state(resolved.config, report.inferred, seq_len)
    if isinstance(expected, str):
        return []  # already reported by the shape check
    problems = []
    for name, tensors in stored_files.items():
        for key, (_, dtype) in tensors.items():
            canonical = TABLE_KEY if key == "weights" and name.startswith("puzzle") else key
            want = expected.get(canonical)
            # Float widths may differ (converted official/research files keep theirs; loading casts), but
            # an integer or boolean tensor where the model holds floats (or the reverse) cannot be loaded.
            if want is not None and _dtype_kind(want[1]) != _dtype_kind(dtype):
                problems.append(f"{name}: {key} is {dtype}, the config builds {want[1]}")
    return problems


def _report(path: Path, fmt: str, shapes: dict[str, tuple[list[int], str]], stored: dict[str, str],
            resolved: Any, source: str, seq_len: int | None, notes: list[str]) -> Inspection:
    table = shapes.get(TABLE_KEY)
    table_entries = table[0][0] * table[0][1] if table else 0
    parameters = sum(_numel(shape) for key, (shape, _) in shapes.items() if key not in (*BUFFERS, TABLE_KEY))
    inferred = _infer(shapes)
    problems: list[str] = []
    arch = None
    if resolved is not None:
        arch = dataclasses.asdict(resolved.config.arch)
        problems = _consistency(shapes, resolved.config, inferred, seq_len)
    tensors = [(key, stored[key], shape, dtype) for key, (shape, dtype) in shapes.items()]
    return Inspection(str(path), fmt, tensors, parameters, table_entries, inferred, arch, source, problems,
                      notes)


def _numel(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _infer(shapes: dict[str, tuple[list[int], str]]) -> dict[str, Any]:
    import re

    embed = shapes.get("core.token_embedding.weight")
    table = shapes.get(TABLE_KEY)
    layers = {m.group(1) for k in shapes if (m := re.match(r"core\.blocks\.(\d+)\.", k))}
    return {"vocab_size": embed[0][0] if embed else None, "hidden_size": embed[0][1] if embed else None,
            "num_puzzle_identifiers": table[0][0] if table else 0,
            "puzzle_emb_ndim": table[0][1] if table else 0, "L_layers": len(layers),
            "mlp_t": any(".token_mixer." in k for k in shapes),
            "pos_encodings": "learned" if "core.position_embedding.weight" in shapes else "rope or none",
            "H_init dtype": shapes.get("core.h_init", (None, None))[1]}


def _consistency(shapes: dict[str, tuple[list[int], str]], config: Any, inferred: dict[str, Any],
                 seq_len: int | None) -> list[str]:
    """Every disagreement between the stored shapes and the model the config describes."""
    from trmlab.models.core import prefix_length

    arch = config.arch
    problems = []
    prefix_len = prefix_length(arch)
    for key in ("core.position_embedding.weight", "core.blocks.0.token_mixer.down.weight"):
        if key in shapes and seq_len is None:
            seq_len = shapes[key][0][0] - prefix_len
    built = _expected_state(config, inferred, seq_len)
    if isinstance(built, str):
        return [built]
    expected = {k: shape for k, (shape, _) in built.items()}
    for key in expected.keys() - shapes.keys():
        problems.append(f"missing {_name(key)}: the config expects shape {expected[key]}")
    for key in shapes.keys() - expected.keys():
        problems.append(f"unexpected {_name(key)} {shapes[key][0]}: the config has no such tensor")
    for key in expected.keys() & shapes.keys():
        if expected[key] != shapes[key][0]:
            problems.append(f"{_name(key)}: stored {shapes[key][0]}, the config gives {expected[key]}")
    init_dtype = shapes.get("core.h_init", (None, None))[1]
    if arch.forward_dtype != "auto" and init_dtype and init_dtype != arch.forward_dtype:
        problems.append(f"H_init/L_init stored as {init_dtype} but arch.forward_dtype is "
                        f"{arch.forward_dtype} (the official trainer stores them in the forward dtype)")
    return sorted(problems)


def _expected_state(config: Any, inferred: dict[str, Any], seq_len: int | None
                    ) -> dict[str, tuple[list[int], str]] | str:
    """{key: (shape, dtype)} of the model ``config`` builds (on the meta device), or why it cannot be
    built."""
    from trmlab.models import build_model

    try:
        with torch.device("meta"):
            model = build_model(config.arch, seq_len=seq_len or 1, vocab_size=inferred["vocab_size"] or 1,
                                num_puzzle_identifiers=max(inferred["num_puzzle_identifiers"], 1))
    except TrmlabError as error:
        return f"the config does not describe a buildable model: {error}"
    return {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


def _name(key: str) -> str:
    official = canonical_to_official(key)
    return f"{key} (official {official})" if official else key


def format_inspection(report: Inspection) -> str:
    """The human-readable report."""
    lines = [f"checkpoint: {report.path}", f"format: {report.format}", "", "tensors:"]
    width = max((len(stored) for _, stored, _, _ in report.tensors), default=10)
    for _, stored, shape, dtype in report.tensors:
        lines.append(f"  {stored:<{width}}  {shape!s:<16} {dtype}")
    total = report.parameters + report.table_entries
    lines += ["", f"parameters (trainable, puzzle table excluded): {report.parameters:,}",
              f"puzzle table entries: {report.table_entries:,}",
              f"total numbers incl. table: {total:,}", "",
              "inferred from shapes: " + ", ".join(f"{k}={v}" for k, v in report.inferred.items()), "",
              f"architecture ({report.architecture_source}):"]
    if report.architecture:
        encoder_model = report.architecture.get("name") != "trm"
        shown = {k: v for k, v in report.architecture.items()
                 if encoder_model or not k.startswith(("encoder", "recurrent", "kl_weight"))}
        lines += [f"  {k}: {v}" for k, v in shown.items()]
    else:
        lines.append("  (none: shapes cannot tell H_cycles, L_cycles, num_heads, halt_max_steps...; pass "
                     "preset= / key=value overrides to check the shapes against a config)")
    if report.architecture is None:
        lines += ["", "inconsistencies: not checked (no architecture to check the shapes against)"]
    else:
        lines += ["", "inconsistencies:" if report.inconsistencies else "inconsistencies: none"]
    lines += [f"  - {problem}" for problem in report.inconsistencies]
    if report.notes:
        lines += ["", "notes:"] + [f"  - {note}" for note in report.notes]
    return "\n".join(lines)
