"""``trmlab checkpoint push CKPT hf://ORG/REPO``: a trmlab checkpoint on the Hugging Face Hub, with a model
card that carries the exact config it was trained with.

The folder uploaded holds the checkpoint (``step_N/``, the trmlab bundle as is; or, ``layout=official``, the
official ``step_N`` + ``all_config.yaml`` export) and ``README.md``, the model card: every architecture key
that differs from the official repository's defaults called out (the released ARC-AGI-1 checkpoint travelled
without its config, and users who evaluated it with the repository's L_cycles 6 and EMA off got 2-4% instead
of ~40%), the full resolved config with each value's source, provenance, the dataset's fingerprint and recipe,
the metrics of its evaluations, and the commands that load and evaluate it.

``--dry-run`` writes that folder (``out=`` or a fresh default it names) and uploads nothing. The upload is
``HfApi().create_repo(exist_ok=True)`` then one ``HfApi().upload_folder`` call; it needs network and a token
(``hf auth login`` or ``HF_TOKEN``), so trmlab's tests cover the folder, not the upload.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trmlab.errors import CheckpointError, ConfigError

LAYOUTS = ("trmlab", "official")
OFFICIAL_DEFAULTS_PRESET = "trm-arc1-repo-default"
# Training keys of the seed's discrepancy table (OFFICIAL_TRM_CONFIG_DISCREPANCY.md) shown beside the
# architecture: ema decides which weights an official step_N holds.
RECIPE_KEYS = ("ema", "ema_rate", "global_batch_size", "lr", "lr_warmup_steps")


@dataclass
class PushSettings:
    """What ``trmlab checkpoint push`` was asked to do."""

    checkpoint: str
    repo: str                      # hf://ORG/REPO
    private: bool = False
    layout: str = "trmlab"
    out: str | None = None
    dry_run: bool = False
    overwrite: bool = False

    def repo_id(self) -> str:
        """ORG/REPO (ConfigError for anything but ``hf://ORG/REPO``)."""
        from trmlab.interop.hub import HubError, is_hub_path, parse_hub_path

        target = parse_hub_path(self.repo) if is_hub_path(self.repo) else None
        if target is None or target.path or target.revision or target.repo_type != "model":
            raise HubError(f"{self.repo}: push to a model repository, written hf://ORG/REPO (no @revision, "
                           "no path inside it)")
        return target.repo_id


def push(settings: PushSettings) -> Path | str:
    """Build the folder; with ``dry_run`` return its path, otherwise upload it and return the commit URL."""
    if settings.layout not in LAYOUTS:
        raise ConfigError(f"layout={settings.layout}: choose trmlab (the bundle as is) or official (step_N + "
                          "all_config.yaml)")
    repo_id = settings.repo_id()
    if not settings.dry_run:
        from trmlab.interop.hub import hub_module

        hub_module()  # the one-line error before any work when the extra is missing
    if settings.dry_run:
        out = _dry_run_folder(settings, repo_id)
        return build_folder(settings.checkpoint, repo_id, out, layout=settings.layout,
                            overwrite=settings.overwrite)
    with tempfile.TemporaryDirectory(prefix="trmlab-push-") as staging:
        folder = build_folder(settings.checkpoint, repo_id, Path(staging) / "upload", layout=settings.layout)
        return upload_folder(folder, repo_id, private=settings.private)


def _dry_run_folder(settings: PushSettings, repo_id: str) -> Path:
    from trmlab.evaluation.outputs import default_out_dir

    if settings.out is None:
        return default_out_dir(Path("runs"), f"push-{repo_id.replace('/', '--')}")
    out = Path(settings.out)
    if out.exists() and not settings.overwrite:
        raise ConfigError(f"out={out}: already exists; pass another out=DIR, or --overwrite to replace it")
    return out


def upload_folder(folder: Path, repo_id: str, *, private: bool) -> str:
    """Create the repository if needed (``private`` applies only then) and upload ``folder`` in one commit."""
    from trmlab.interop.hub import HubError, hub_module

    hub = hub_module()
    api = hub.HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=f"trmlab checkpoint push ({_checkpoint_name(folder)})")
    except Exception as error:  # network, authentication, quota: one line, exit 3
        cause = f"{type(error).__name__}: {error}".splitlines()[0]
        raise HubError(f"hf://{repo_id}: upload failed ({cause}); log in (hf auth login, or set HF_TOKEN) "
                       "and check the network, or upload the --dry-run folder yourself", 3) from None
    return str(getattr(info, "commit_url", info))


def _checkpoint_name(folder: Path) -> str:
    steps = sorted(p.name for p in folder.iterdir() if p.name.startswith("step_"))
    return steps[0] if steps else folder.name


# ----------------------------------------------------------------------------------------------- the folder


def build_folder(checkpoint: str | Path, repo_id: str, out: str | Path, *, layout: str = "trmlab",
                 overwrite: bool = False) -> Path:
    """Write ``out``: the checkpoint in ``layout`` and ``README.md`` (the model card); atomically (a hidden
    sibling renamed into place), so a failure leaves nothing."""
    from trmlab.checkpoints.bundle import is_trmlab_checkpoint, read_checkpoint
    from trmlab.interop.hub import resolve_path

    source = Path(resolve_path(checkpoint))
    if not (source.is_dir() and is_trmlab_checkpoint(source)):
        raise CheckpointError(f"{checkpoint}: not a trmlab checkpoint directory (step_N/ with "
                              "manifest.json); convert an official file first: trmlab checkpoint convert SRC "
                              "DST to=trmlab")
    bundle = read_checkpoint(source, verify=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        name = _step_name(source, bundle.manifest)
        if layout == "official":
            from trmlab.interop.convert import trmlab_to_official

            export = trmlab_to_official(source, staging / ".export").parent  # it returns the step_N file
            for item in export.iterdir():
                item.rename(staging / item.name)
            export.rmdir()
        else:
            shutil.copytree(source, staging / name)
        card = model_card(bundle, source, repo_id, layout=layout, name=name)
        (staging / "README.md").write_text(card, encoding="utf-8")
        if out.exists() and overwrite:
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _step_name(source: Path, manifest: dict[str, Any]) -> str:
    step = manifest.get("step")
    return f"step_{step}" if isinstance(step, int) else source.name


# ----------------------------------------------------------------------------------------------- the card


def model_card(bundle: Any, source: Path, repo_id: str, *, layout: str, name: str) -> str:
    """README.md for the Hub: front matter, the config against the official defaults, the full config,
    provenance, dataset, metrics, and the commands that load and evaluate the checkpoint."""
    resolved = bundle.config()
    config = resolved.config
    differing, rows = official_comparison(config)
    path = f"hf://{repo_id}/{name}"
    sections = [
        _front_matter(config),
        f"# {repo_id}\n\nA {config.arch.name.upper()} checkpoint ({name}, "
        f"{'EMA' if bundle.manifest.get('contents', {}).get('ema') else 'raw'} weights) written by "
        f"trmlab in the {_layout_words(layout)}.",
        _differences_section(differing),
        _comparison_table(rows),
        _use_section(path, layout, config),
        _dataset_section(bundle.manifest, config),
        _metrics_section(source, bundle.manifest),
        _provenance_section(bundle.manifest),
        _full_config_section(resolved),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def official_comparison(config: Any) -> tuple[list[str], list[tuple[str, Any, Any, bool]]]:
    """(the keys that differ, rows ``(key, this checkpoint, official default, differs)``) for every
    architecture key of this variant and the recipe keys of the seed's table, against the official
    repository's defaults (preset ``trm-arc1-repo-default``: cfg_pretrain.yaml + arch/trm.yaml)."""
    from trmlab.config.diff import diff_table
    from trmlab.config.loader import load_config

    official = load_config(OFFICIAL_DEFAULTS_PRESET).config
    compared = diff_table([("checkpoint", config), ("official", official)], all_rows=True)
    rows = {row.key: row for row in compared}
    encoder_keys = config.arch.name == "trm"  # a TRM has no encoder: its encoder keys mean nothing
    keys = [key for key, row in rows.items()
            if row.arch and not (encoder_keys and "encoder" in key)] + list(RECIPE_KEYS)
    table = [(key, *rows[key].values, rows[key].differs) for key in keys]
    return [key for key, _, _, differs in table if differs], table


def _front_matter(config: Any) -> str:
    tags = ["trmlab", "tiny-recursive-model", config.arch.name]
    return "---\nlibrary_name: trmlab\ntags:\n" + "".join(f"- {tag}\n" for tag in tags) + "---"


def _layout_words(layout: str) -> str:
    if layout == "official":
        return "official layout (step_N + all_config.yaml, loadable by the official code)"
    return ( "trmlab layout (safetensors + config.yaml with provenance + checksummed manifest)")


def _differences_section(differing: list[str]) -> str:
    if not differing:
        return ("## Differences from the official repository's defaults\n\nNone: every architecture key and "
                "the EMA setting equal the official repository's defaults.")
    return ("## Differences from the official repository's defaults\n\nThese values differ from "
            "SamsungSAILMontreal/TinyRecursiveModels' config/cfg_pretrain.yaml + config/arch/trm.yaml. Run "
            "the weights with this checkpoint's own values (trmlab does, from its config): a value that "
            "changes no tensor shape (cycles, heads, halting, EMA) runs silently with the repository's "
            "default and computes something else:\n\n"
            + ", ".join(f"**{key}**" for key in differing) + ".")


def _comparison_table(rows: list[tuple[str, Any, Any, bool]]) -> str:
    lines = ["| key | this checkpoint | official repository default | |", "|---|---|---|---|"]
    for key, mine, theirs, differs in rows:
        mark = "**differs**" if differs else ""
        shown = f"**{_cell(mine)}**" if differs else _cell(mine)
        lines.append(f"| {key} | {shown} | {_cell(theirs)} | {mark} |")
    return "## Configuration against the official defaults\n\n" + "\n".join(lines)


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool | type(None)) else str(value)


def _use_section(path: str, layout: str, config: Any) -> str:
    data = (config.data_paths_test or config.data_paths or ["DATA_DIR"])[0]
    return ("## Load and evaluate\n\nNetwork needed the first time; the files land in the Hugging Face cache "
            "(`HF_HOME`), and `hf://...@REVISION/...` pins a revision.\n\n```bash\npip install "
            f"'trmlab[hub]'\ntrmlab checkpoint inspect {path}\ntrmlab eval {path} {data}\n```\n\n```python\n"
            f"import trmlab\nmodel = trmlab.load_checkpoint(\"{path}\")\n```"
            + ("\n\nThe official code loads `step_N` with the `all_config.yaml` beside it."
               if layout == "official" else ""))


def _dataset_section(manifest: dict[str, Any], config: Any) -> str:
    from trmlab.interop.releases import RELEASES

    lines = ["## Dataset", "", f"- data_paths: {list(config.data_paths)}",
             f"- data_paths_test: {list(config.data_paths_test)}",
             f"- fingerprint: `{manifest.get('dataset_fingerprint')}` (sha256 over the dataset's files; "
             "`trmlab eval` refuses another build for this puzzle table)"]
    model = manifest.get("model") or {}
    lines.append(f"- seq_len {model.get('seq_len')}, vocab_size {model.get('vocab_size')}, "
                 f"num_puzzle_identifiers {model.get('num_puzzle_identifiers')}")
    names = {Path(str(path)).name for path in config.data_paths}
    recipes = {release.build_command for release in RELEASES if release.dataset in names}
    lines += [f"- recipe: `{command}`" for command in sorted(recipes)]
    return "\n".join(lines)


def _metrics_section(source: Path, manifest: dict[str, Any]) -> str:
    """Metrics of the evaluations the run made of this checkpoint (``<run>/eval/step_N/metrics.json``)."""
    step = manifest.get("step")
    found = source.parent.parent / "eval" / f"step_{step}" / "metrics.json"
    if not found.is_file():
        return ("## Evaluation\n\nNo evaluation of this checkpoint was found beside it (the run's "
                f"eval/step_{step}/metrics.json); evaluate it with the command above.")
    try:
        metrics = json.loads(found.read_text())
    except ValueError:
        return f"## Evaluation\n\n{found} is not valid JSON; not reported."
    scalars = {key: value for key, value in _flatten(metrics).items() if isinstance(value, int | float)}
    lines = ["| metric | value |", "|---|---|"] + [f"| {key} | {value} |" for key, value in scalars.items()]
    return f"## Evaluation (the run's eval/step_{step}/metrics.json)\n\n" + "\n".join(lines)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}/" if isinstance(value, dict) else f"{prefix}{key}"))
    return flat


def _provenance_section(manifest: dict[str, Any]) -> str:
    keys = ("step", "trmlab_version", "git_commit", "created", "source")
    lines = [f"- {key}: {json.dumps(manifest[key]) if isinstance(manifest[key], dict) else manifest[key]}"
             for key in keys if manifest.get(key) is not None]
    return "## Provenance\n\n" + "\n".join(lines)


def _full_config_section(resolved: Any) -> str:
    from trmlab.config.show import stored_document
    from trmlab.config.yamlio import dump_yaml

    document = stored_document(resolved)
    sources = "\n".join(f"| {key} | {text} |" for key, text in document["provenance"].items())
    return ("## Full resolved config\n\nAs stored in the checkpoint's config.yaml.\n\n```yaml\n"
            f"{dump_yaml(document['config']).rstrip()}\n```\n\n<details><summary>Where each value came from"
            f"</summary>\n\n| key | source |\n|---|---|\n{sources}\n\n</details>")
