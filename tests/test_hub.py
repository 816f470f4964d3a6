"""Hugging Face Hub paths, the known releases and ``checkpoint push``, offline.

Each test builds a Hugging Face cache on disk in the layout huggingface_hub itself writes and reads
(``models--ORG--REPO/{refs/<branch or tag>, snapshots/<commit>/..., blobs/}``; ``.no_exist/<commit>/...``
where the Hub answered 404) and runs with ``HF_HUB_OFFLINE=1``: huggingface_hub resolves every ``hf://`` path
from that cache, as it would for a user without network. Nothing of trmlab is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

pytest.importorskip("huggingface_hub")

from test_data_build_puzzles import assert_same_tree, maze_input, quiet
from test_eval_support import IDENTITY, build_dataset, simple_task
from trmlab.cli import main
from trmlab.interop.hub import HubError, parse_hub_path

COMMIT_A = hashlib.sha1(b"first upload").hexdigest()
COMMIT_B = hashlib.sha1(b"second upload").hexdigest()
STEP = "hf://org/trm/tiny/step_100"
AUGS = [IDENTITY, (1, "0213456789"), (4, "0987654321")]
Add = Callable[..., Path]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # two threads fight on the shared 2-core machine


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Add:
    """An empty Hugging Face cache under HF_HOME=tmp/hf, offline; returns ``add(repo, commit, files, ...)``.

    huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE into ``huggingface_hub.constants`` when it is first
    imported, so the two values are also set there, as a fresh process would have them.
    """
    import huggingface_hub.constants as constants

    home = tmp_path / "hf"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for name, value in (("HF_HOME", str(home)), ("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def add(repo: str, commit: str, files: dict[str, Path | bytes], *, repo_type: str = "model",
            refs: tuple[str, ...] = ("main",), absent: tuple[str, ...] = ()) -> Path:
        root = cache / f"{repo_type}s--{repo.replace('/', '--')}"
        for ref in refs:
            (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
            (root / "refs" / ref).write_text(commit)
        for name, content in files.items():
            data = content if isinstance(content, bytes) else Path(content).read_bytes()
            blob = root / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = root / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        for name in absent:  # what huggingface_hub records after a 404 from the Hub
            marker = root / ".no_exist" / commit / name
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        return root / "snapshots" / commit

    return add


@pytest.fixture
def tiny_repo(hub_cache, official_trm_tiny) -> Path:
    """The shared official-layout checkpoint as hf://org/trm/tiny/{step_100, all_config.yaml}."""
    return hub_cache("org/trm", COMMIT_A, {"tiny/step_100": official_trm_tiny / "step_100",
                                           "tiny/all_config.yaml": official_trm_tiny / "all_config.yaml"})


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """An ARC dataset whose 10 identifiers match the tiny checkpoint's table (as in test_eval_checkpoint)."""
    tasks = {f"task{i}": simple_task(i, n_test=1 + i) for i in range(2)}
    return build_dataset(tmp_path / "data", tasks, {t: AUGS for t in tasks}, side=6, extra_identifiers=3)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("trmlab: error:")]
    assert len(errors) == 1, err
    return errors[0]


# ----------------------------------------------------------------------------------------------- paths


def test_hub_paths_parse_like_huggingface_hubs_file_system():
    target = parse_hub_path("hf://arcprize/trm_arc_prize_verification@v1.0/arc_v1_public/step_518071")
    assert (target.repo_id, target.repo_type, target.revision, target.path) == (
        "arcprize/trm_arc_prize_verification", "model", "v1.0", "arc_v1_public/step_518071")
    data = parse_hub_path("hf://datasets/sapientinc/sudoku-extreme@refs%2Fpr%2F1")
    assert (data.repo_id, data.repo_type, data.revision, data.path) == (
        "sapientinc/sudoku-extreme", "dataset", "refs/pr/1", "")
    assert data.url("train.csv") == "hf://datasets/sapientinc/sudoku-extreme@refs/pr/1/train.csv"
    for bad in ("hf://only-org", "hf://org/repo@/x", "hf://spaces/org/app/x"):
        with pytest.raises(HubError):
            parse_hub_path(bad)


def test_load_inspect_and_convert_an_official_checkpoint_from_the_cache(tiny_repo, official_trm_tiny,
                                                                      tmp_path, capsys):
    from trmlab import load_checkpoint
    from trmlab.checkpoints import read_checkpoint
    from trmlab.interop.convert import official_to_trmlab

    model = load_checkpoint(STEP, seq_len=36)
    local = load_checkpoint(official_trm_tiny / "step_100", seq_len=36)
    assert model.config.config.arch.L_cycles == 3  # from the all_config.yaml beside it in the repository
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), local.state_dict().values()))
    assert model.provenance["hub"] == f"{STEP} (revision {COMMIT_A})"

    assert main(["checkpoint", "inspect", STEP, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] > 0 and not report["inconsistencies"]

    out = official_to_trmlab(STEP, tmp_path / "converted", seq_len=36)
    source = read_checkpoint(out).manifest["source"]
    assert source["hub"]["repo"] == "org/trm" and source["hub"]["revision"] == COMMIT_A
    assert source["hub"]["path"] == "tiny/step_100"


def test_a_revision_pin_is_honoured(hub_cache, official_trm_tiny):
    from trmlab import load_checkpoint

    weights = official_trm_tiny / "step_100"
    first = (official_trm_tiny / "all_config.yaml").read_bytes()
    second = first.replace(b"L_cycles: 3", b"L_cycles: 5")
    assert second != first
    hub_cache("org/trm", COMMIT_A, {"tiny/step_100": weights, "tiny/all_config.yaml": first}, refs=("v1",))
    hub_cache("org/trm", COMMIT_B, {"tiny/step_100": weights, "tiny/all_config.yaml": second})
    assert load_checkpoint(STEP, seq_len=36).config.config.arch.L_cycles == 5  # main = the second upload
    pinned = load_checkpoint("hf://org/trm@v1/tiny/step_100", seq_len=36)
    assert pinned.config.config.arch.L_cycles == 3 and COMMIT_A in pinned.provenance["hub"]
    by_commit = load_checkpoint(f"hf://org/trm@{COMMIT_A}/tiny/step_100", seq_len=36)
    assert by_commit.config.config.arch.L_cycles == 3


def test_eval_reads_checkpoint_and_dataset_from_the_hub_and_records_the_revision(tiny_repo, hub_cache,
                                                                                 tiny_dataset, tmp_path):
    files = {f"arc/{p.relative_to(tiny_dataset).as_posix()}": p for p in tiny_dataset.rglob("*")
             if p.is_file()}
    hub_cache("org/arc-data", COMMIT_B, files, repo_type="dataset")
    out = tmp_path / "eval"
    assert main(["eval", STEP, "hf://datasets/org/arc-data/arc", f"out={out}", "global_batch_size=4",
                 "device=cpu", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hub"] == {"url": f"hf://org/trm@{COMMIT_A}/tiny/step_100", "repo": "org/trm",
                              "repo_type": "model", "revision": COMMIT_A, "path": "tiny/step_100",
                              "requested": STEP}
    assert metrics["counts"]["tasks"] == 2 and metrics["step"] == 100
    assert f"datasets--org--arc-data/snapshots/{COMMIT_B}/arc" in metrics["dataset"]


def test_a_missing_file_or_an_unreachable_hub_is_one_line(tiny_repo, hub_cache, official_trm_tiny, capsys):
    from trmlab import load_checkpoint
    from trmlab.errors import CheckpointError

    # Not in the cache and offline: the Hub cannot be asked, so it is the environment (exit 3).
    assert main(["checkpoint", "inspect", "hf://org/trm/tiny/step_999"]) == 3
    line = one_error_line(capsys)
    assert "hf://org/trm/tiny/step_999: not in the local Hugging Face cache" in line
    assert "HF_HUB_OFFLINE is set" in line and "connect to the network" in line
    # The cache remembers the Hub's 404 for this file: the path does not exist (exit 2).
    hub_cache("org/trm", COMMIT_A, {}, absent=("tiny/step_999",))
    assert main(["checkpoint", "inspect", "hf://org/trm/tiny/step_999"]) == 2
    assert "no such file in model repository org/trm" in one_error_line(capsys)
    # step_N fetched without its all_config.yaml (not cached, offline): said before any load is tried.
    hub_cache("org/bare", COMMIT_A, {"step_100": official_trm_tiny / "step_100"})
    assert main(["checkpoint", "inspect", "hf://org/bare/step_100"]) == 3
    assert "hf://org/bare/all_config.yaml (beside hf://org/bare/step_100): not in the local" in \
        one_error_line(capsys)
    # ...and when the Hub said it has none, loading asks for the architecture, as for a local file.
    hub_cache("org/bare", COMMIT_A, {}, absent=("all_config.yaml",))
    with pytest.raises(CheckpointError, match=r"has no all_config\.yaml beside it"):
        load_checkpoint("hf://org/bare/step_100", seq_len=36)


def test_without_the_extra_a_hub_path_is_one_line(monkeypatch, capsys):
    from trmlab import load_checkpoint

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    assert main(["checkpoint", "inspect", STEP]) == 2
    assert "pip install 'trmlab[hub]'" in one_error_line(capsys)
    with pytest.raises(HubError, match="huggingface_hub package, which is not installed"):
        load_checkpoint(STEP)


def test_a_fresh_process_reads_HF_HOME_and_HF_HUB_OFFLINE(tiny_repo, tmp_path):
    """The environment variables themselves (no constant set in-process): the user's own conventions."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("HF_HUB_CACHE", None)  # HF_HOME/hub is the cache
    script = ("import sys; from trmlab.cli import main; "
              f"found = main(['checkpoint', 'inspect', '{STEP}', '--json']); "
              "missing = main(['checkpoint', 'inspect', 'hf://org/x/step_1']); "
              "print('codes', found, missing)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.stdout.strip().splitlines()[-1] == "codes 0 3", run.stderr
    assert '"parameters": 132738' in run.stdout and "HF_HUB_OFFLINE is set" in run.stderr


def test_init_from_a_hub_path_records_repository_and_commit(tiny_repo):
    from trmlab.config.loader import load_config
    from trmlab.training.transfer import reconcile_init_config

    resolved = load_config(None, [f"init_from={STEP}"])
    reconciled, variant = reconcile_init_config(resolved, STEP)
    assert variant == "trm" and reconciled.config.arch.L_cycles == 3  # the checkpoint's architecture
    assert f"{STEP} fetched as {STEP} (revision {COMMIT_A})" in reconciled.provenance["init_from"]


def test_maze_source_from_a_dataset_repository_with_a_revision(hub_cache, tmp_path):
    from trmlab.data.build_maze import MazeBuildOptions, build_maze

    folder = maze_input(tmp_path)
    csv = {name: folder / name for name in ("train.csv", "test.csv")}
    hub_cache("datasets-org/mazes", COMMIT_A, csv, repo_type="dataset", refs=("v1",))
    hub_cache("datasets-org/mazes", COMMIT_B, {"train.csv": b"not,the,same\n", "test.csv": b"x\n"},
              repo_type="dataset")
    pinned = "hf://datasets/datasets-org/mazes@v1"  # main holds other files: the pin decides
    build_maze(MazeBuildOptions(source=pinned, output_dir=str(tmp_path / "hub"), seed=0), log=quiet)
    build_maze(MazeBuildOptions(input_dir=str(folder), output_dir=str(tmp_path / "dir"), seed=0), log=quiet)
    assert_same_tree(tmp_path / "hub", tmp_path / "dir")


# ----------------------------------------------------------------------------------------------- releases


def test_checkpoint_known_lists_the_releases_with_their_needs(capsys):
    assert main(["checkpoint", "known", "--json"]) == 0
    releases = {(r["repo"], r["folder"]): r for r in json.loads(capsys.readouterr().out)["releases"]}
    arc1 = releases[("arcprize/trm_arc_prize_verification", "arc_v1_public")]
    assert arc1["path"] == "hf://arcprize/trm_arc_prize_verification/arc_v1_public/step_518071"
    assert (arc1["identifiers"], arc1["seq_len"], arc1["layout"]) == (876_406, 900, "arc")
    assert "40.0%" in arc1["score"] and arc1["verified"] == "layout from the card"
    assert releases[("arcprize/trm_arc_prize_verification", "arc_v2_public")]["identifiers"] == 1_191_730
    for name in ("ARC-AGI-1", "ARC-AGI-2", "Sudoku-Extreme-att", "Sudoku-Extreme-mlp", "Maze-Hard"):
        assert (f"Sanjin2024/TinyRecursiveModel-{name}", "") in releases
    assert releases[("Sanjin2024/TinyRecursiveModel-Sudoku-Extreme-mlp", "")]["seq_len"] == 81
    assert releases[("Trelis/TRM-ARC-AGI-II", "")]["identifiers"] is None  # not published: not invented
    assert all(r["verified"] in ("evaluated", "loaded", "layout from the card", "not checked")
               for r in releases.values())
    assert main(["checkpoint", "known"]) == 0
    table = capsys.readouterr().out
    assert all(r["path"] in table for r in releases.values()) and "876,406 puzzle identifiers" in table


def test_eval_of_a_known_release_on_the_wrong_dataset_prints_the_build_command(hub_cache, tiny_dataset,
                                                                              capsys):
    release = "hf://arcprize/trm_arc_prize_verification/arc_v1_public/step_518071"
    assert main(["eval", release, str(tiny_dataset), "device=cpu"]) == 2
    line = one_error_line(capsys)
    assert "puzzle identifiers: its table has 876,406 rows" in line and "seq_len: it needs 900" in line
    assert line.endswith("trmlab data build-arc --input-file-prefix "
                         "TinyRecursiveModels/kaggle/combined/arc-agi --output-dir data/arc1concept-aug-1000 "
                         "--subsets training evaluation concept "
                         "--test-set-name evaluation --num-aug 1000")
    assert not list(Path(os.environ["HF_HUB_CACHE"]).iterdir())  # refused before any download


# ----------------------------------------------------------------------------------------------- push


@pytest.fixture
def arc1_checkpoint(tmp_path) -> Path:
    """A small checkpoint trained with the trm-arc1 recipe (narrower, so it is quick; L_cycles 4, ema on)."""
    from trmlab.checkpoints import save_model_checkpoint
    from trmlab.config.loader import load_config
    from trmlab.models import build_model

    resolved = load_config("trm-arc1", ["arch.hidden_size=32", "arch.num_heads=2", "arch.puzzle_emb_ndim=32",
                                        "arch.forward_dtype=float32"])
    model = build_model(resolved.config, seq_len=16, vocab_size=12, num_puzzle_identifiers=3)
    ema = {k: v.clone() for k, v in model.state_dict().items() if k != "puzzle_embedding.weights"}
    run = tmp_path / "run"
    metrics = run / "eval" / "step_7" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"ARC/pass@2": 0.25, "counts": {"tasks": 4}}))
    return save_model_checkpoint(run / "checkpoints" / "step_7", model, config=resolved, step=7,
                                 ema_state=ema, dataset_fingerprint="f" * 64)


def test_push_dry_run_writes_the_folder_and_a_card_with_the_official_differences(arc1_checkpoint, tmp_path,
                                                                                capsys, hub_cache):
    from trmlab import load_checkpoint

    out = tmp_path / "upload"
    assert main(["checkpoint", "push", str(arc1_checkpoint), "hf://me/trm-arc1-small", f"out={out}",
                 "--dry-run"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "| arch.L_cycles | **4** | 6 | **differs** |" in card
    assert "| ema | **true** | false | **differs** |" in card
    assert "| arch.H_cycles | 3 | 3 |  |" in card  # equal keys are listed, not called out
    assert "**arch.L_cycles**" in card.split("## Configuration")[0]  # named up front
    assert "trmlab eval hf://me/trm-arc1-small/step_7" in card and "| ARC/pass@2 | 0.25 |" in card
    assert "f" * 64 in card and "L_cycles: 4" in card  # fingerprint; the full config
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "step_7"]

    # The folder, uploaded (here: placed in the cache as the Hub would serve it), loads by its hf:// path.
    hub_cache("me/trm-arc1-small", COMMIT_A, {p.relative_to(out).as_posix(): p for p in out.rglob("*")
                                               if p.is_file()})
    model = load_checkpoint("hf://me/trm-arc1-small/step_7")
    assert model.config.config.arch.L_cycles == 4 and model.config.config.ema is True

    assert main(["checkpoint", "push", str(arc1_checkpoint), "hf://me/x", f"out={out}", "--dry-run"]) == 2
    assert "already exists" in one_error_line(capsys)


def test_push_official_layout_and_upload_errors(arc1_checkpoint, tmp_path, monkeypatch, capsys):
    import yaml

    out = tmp_path / "official"
    assert main(["checkpoint", "push", str(arc1_checkpoint), "hf://me/x", "layout=official", f"out={out}",
                 "--dry-run"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "all_config.yaml", "step_7"]
    assert yaml.safe_load((out / "all_config.yaml").read_text())["arch"]["L_cycles"] == 4
    assert main(["checkpoint", "push", str(arc1_checkpoint), "hf://me/x/sub", "--dry-run"]) == 2
    assert "hf://ORG/REPO (no @revision, no path inside it)" in one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert main(["checkpoint", "push", str(arc1_checkpoint), "hf://me/x"]) == 2
    assert "pip install 'trmlab[hub]'" in one_error_line(capsys)


def test_a_trainer_fetches_an_hf_init_from_once_for_config_and_weights(tiny_repo, tmp_path, monkeypatch):
    """One fetch, so the architecture and the weights cannot come from two commits of an unpinned path."""
    import trmlab.interop.hub as hub
    from train_helpers import write_tiny_dataset
    from trmlab.config.loader import load_config
    from trmlab.training.loop import Trainer

    fetched: list[str] = []
    real = hub.resolve_path

    def counting(path, **kwargs):
        if hub.is_hub_path(str(path)):
            fetched.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(hub, "resolve_path", counting)
    data = write_tiny_dataset(tmp_path / "data", groups=2, puzzles_per_group=2, seq_len=36, num_ids=10)
    resolved = load_config(None, [f"data_paths=[{data}]", f"run_dir={tmp_path / 'run'}", "device=cpu",
                                  "max_steps=1", "global_batch_size=4", "eval_interval=null",
                                  f"init_from={STEP}"])
    with pytest.warns(UserWarning, match="no dataset fingerprint"):
        trainer = Trainer(resolved, progress=False, evaluate=lambda trainer, step: {})
    assert fetched == [STEP]
    assert trainer.init_report["loaded"] == 14 and trainer.config.arch.L_cycles == 3
