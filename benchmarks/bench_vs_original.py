"""This repository against the one it is modelled on (github.com/bubbliiiing/facenet-pytorch), side by side on
this machine: the LFW evaluation and the training throughput.

    python benchmarks/bench_vs_original.py --original_dir ../facenet-pytorch
    python benchmarks/bench_vs_original.py --original_dir ../facenet-pytorch --parts train --train_steps 50
    python benchmarks/bench_vs_original.py --original_dir ../facenet-pytorch --pairs_limit 200 --train_steps 2

Every measurement runs in a process of its own: both repositories have top-level ``nets`` and ``utils``
packages, so they cannot share one, and a fresh process gives a clean peak memory (that of its largest
process, loader workers included, from wait4; and the sum over its process tree, sampled from /proc every
0.2 s, which counts the pages a worker shares with its parent twice).

Evaluation: the original's eval_LFW.py runs as a script (from a patched temporary copy, see below), with its
own batch size, loader and metric code, on the CPU; ours is ``python eval_LFW.py`` with our defaults, once
per precision. Each reports its accuracy, its wall time as a whole process, and its evaluation time: the
script's work after the imports (the LFW listing, the model and its weights, the embedding and the metrics;
the original's to the line that prints its accuracy, ours as eval_LFW.py measures it).

Training: images/s of timed steps after ``warmup`` untimed ones, the loader included. The original's side is
its train.py's set-up (Facenet, its weights loaded by matching shape, Adam at its learning rate for this
batch size, FacenetDataset and dataset_collate with its num_workers and batch_size // 3 triplets per batch)
driving its own ``utils_fit.fit_one_epoch``; ours is train.py's ``setup`` (triplet sampler, num_workers
"auto", channels-last, Criterion) driving ``utils.training.train_one_epoch``, once per precision. Both
count the images each batch actually feeds the network (batch_size on both sides).

The temporary copy of the original (its checkout is never changed) is patched by text substitution:
  - eval_LFW.py: only its settings lines cuda (False), input_shape, model_path, lfw_dir_path, lfw_pairs_path
    and png_save_path (into the temporary folder), so that it runs what ours runs;
  - utils/dataloader.py: ``np.object`` -> ``object`` (the alias is gone since NumPy 1.24);
  - utils/dataloader.py: ``np.array(pairs)`` -> ``np.array(pairs, dtype=object)`` (NumPy 1.24 and later
    refuse the ragged list of 3- and 4-field pair lines);
  - utils/utils_metrics.py: ``interp1d(..., kind='slinear')`` -> ``kind='linear'`` in calculate_val (the
    B-spline behind 'slinear' in recent SciPy, 1.17 here, raises "Expect x to not have duplicates" on the
    FAR-per-threshold curve, which always repeats values; 'linear' is the same piecewise-linear interpolation
    and accepts them; only VAL@FAR at a tie can differ, the accuracy is not touched).
The patches applied are printed. The original's LossHistory (utils/callback.py, which needs tensorboard) is
replaced by a stand-in: fit_one_epoch calls it only after the timed steps.
Relative paths below are taken from this repository's root.
"""
#------- settings (edit here or override as --name value) -------
original_dir = ""                                # a checkout of github.com/bubbliiiing/facenet-pytorch (required)
model_path = "model_data/facenet_mobilenet.pth"  # weights both sides load (the same state_dict keys)
input_shape = [160, 160, 3]                      # both sides run at this size
lfw_dir_path = "lfw"                             # aligned LFW; the original reads the same folder
lfw_pairs_path = "model_data/lfw_pair.txt"
pairs_limit = 0                                  # 0: every pair; else about this many, the first of every set
annotation_path = "cls_train.txt"                # label;path lines, the format of both repositories
train_steps = 20                                 # timed training steps per measurement
warmup = 2                                       # untimed steps first (the loader's start-up is among them)
batch_size = 96                                  # images per training step on both sides (a multiple of 3)
parts = "eval,train"                             # comparisons to run: eval, train or both
precisions = "fp32,bf16"                         # ours; the original runs float32 (its fp16 is CUDA autocast)
#------------------------------------------------------------------
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The measurement processes import this file by name from its folder, after their own repository's packages.
BENCH_DIR, MODULE = os.path.split(os.path.splitext(os.path.abspath(__file__))[0])
# What a checkout of the original must hold, and a line that only the original has in each.
ORIGINAL_MARKS = {"eval_LFW.py": "LFWDataset", "train.py": "num_workers",
                  "nets/facenet.py": "class Facenet", "nets/facenet_training.py": "def triplet_loss",
                  "utils/dataloader.py": "class FacenetDataset", "utils/utils.py": "def get_num_classes",
                  "utils/utils_fit.py": "def fit_one_epoch", "utils/utils_metrics.py": "def evaluate"}
# Left out of the temporary copy: a checkout may hold datasets, weights and logs.
SKIPPED = {".git", "datasets", "lfw", "logs", "model_data", "img"}
# Fixes for this machine's library versions: (file, old text, new text, why).
SOURCE_FIXES = [
    ("utils/dataloader.py", "dtype=np.object)", "dtype=object)", "np.object is gone since NumPy 1.24"),
    ("utils/dataloader.py", "return np.array(pairs)", "return np.array(pairs, dtype=object)",
     "NumPy 1.24+ refuses the ragged list of 3- and 4-field pair lines"),
    ("utils/utils_metrics.py", "kind='slinear'", "kind='linear'",
     "recent SciPy's spline behind slinear refuses the repeated FAR values; linear is the same interpolation"),
]
ACCURACY_LINE = "Accuracy:"  # what the original's utils_metrics.test prints first after scoring
TREE_SAMPLE_SECONDS = 0.2


# ----------------------------------------------------------------------------- measurement processes

class TreeMemory(threading.Thread):
    """Samples the summed resident memory of a process and all its descendants until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE")

    def tree_bytes(self) -> int:
        """Resident bytes of the process and its descendants now (parents read from /proc/<pid>/stat)."""
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        tree, grown = {self.pid}, True
        while grown:
            before = len(tree)
            tree |= {pid for pid, parent in parents.items() if parent in tree}
            grown = len(tree) > before
        total = 0
        for pid in tree:
            try:
                with open(f"/proc/{pid}/statm") as handle:
                    total += int(handle.read().split()[1]) * self.page
            except (OSError, IndexError, ValueError):
                continue
        return total

    def run(self) -> None:
        while not self.done.wait(TREE_SAMPLE_SECONDS):
            self.peak = max(self.peak, self.tree_bytes())


@dataclass
class Run:
    """One measurement process: exit status, wall seconds, peak RSS (largest process, whole tree) in MiB."""

    status: int
    wall: float
    peak_mib: float
    tree_mib: float
    log: str

    def failure(self) -> str:
        with open(self.log, errors="replace") as handle:
            tail = [line.rstrip() for line in handle.read().replace("\r", "\n").splitlines() if line.strip()]
        return f"FAILED (exit status {self.status}): {' | '.join(tail[-3:])}  [log {self.log}]"


def run_measured(args: list[str], cwd: str, log: str) -> Run:
    """Run ``args`` in ``cwd`` with its output in the file ``log``; its own rusage via wait4, so that earlier
    measurements do not leak into its peak memory as they would with RUSAGE_CHILDREN."""
    env = dict(os.environ, MPLBACKEND="Agg")
    with open(log, "w") as output:
        start = time.perf_counter()
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
        sampler = TreeMemory(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return Run(process.returncode, wall, usage.ru_maxrss / 1024, sampler.peak / 2**20, log)


def worker_command(function: str, *args: str) -> list[str]:
    """A fresh interpreter that calls ``function(*args)`` of this file; the current folder (the repository it
    runs in) stays first on sys.path, so its ``nets`` and ``utils`` are the ones imported."""
    code = f"import sys; sys.path.append({BENCH_DIR!r}); import {MODULE} as bench; bench.{function}(*sys.argv[1:])"
    return [sys.executable, "-c", code, *args]


# ----------------------------------------------------------------------------- run inside those processes

class StampedBatches:
    """``limit`` batches of ``loader``, noting when each is asked for (when the step before it has ended) and
    how many images it holds, so that both training loops are timed the same way from the outside."""

    def __init__(self, loader, limit: int) -> None:
        self.loader, self.limit, self.stamps, self.images = loader, limit, [], []

    def __len__(self) -> int:
        return self.limit

    def __iter__(self):
        batches = iter(self.loader)
        for _ in range(self.limit):
            self.stamps.append(time.perf_counter())
            batch = next(batches)
            self.images.append(len(batch[0]))
            yield batch
        self.stamps.append(time.perf_counter())

    def result(self, skip: int, **facts) -> dict:
        """Images/s over the batches after the first ``skip``, plus the seconds those first ones took."""
        seconds = self.stamps[-1] - self.stamps[skip]
        images = sum(self.images[skip:])
        return {"images": images, "seconds": seconds, "images_per_s": images / seconds,
                "warmup_seconds": self.stamps[skip] - self.stamps[0], **facts}


def original_eval(result_path: str) -> None:
    """Run the (patched) eval_LFW.py of the current folder as a script; note when it prints its accuracy."""
    import runpy

    # The libraries its imports load, loaded before the clock starts (our eval_LFW.py times after its imports).
    import numpy, scipy.interpolate, sklearn.model_selection, torch, torchvision.datasets, tqdm  # noqa: F401

    marks = {}

    class Marking:
        """stdout that notes the time of the first line holding ACCURACY_LINE."""

        def __init__(self, stream) -> None:
            self.stream = stream

        def write(self, text: str) -> int:
            if ACCURACY_LINE in text and "accuracy" not in marks:
                marks["accuracy"] = time.perf_counter()
            return self.stream.write(text)

        def __getattr__(self, name: str):
            return getattr(self.stream, name)

    sys.stdout = Marking(sys.stdout)
    start = time.perf_counter()
    runpy.run_path("eval_LFW.py", run_name="__main__")
    end = time.perf_counter()
    sys.stdout = sys.stdout.stream
    with open(result_path, "w") as handle:
        json.dump({"eval_seconds": marks.get("accuracy", end) - start, "script_seconds": end - start}, handle)


def original_train(spec_json: str, result_path: str) -> None:
    """The original's training set-up as its train.py builds it, stepped by its own fit_one_epoch."""
    import torch
    from torch.utils.data import DataLoader

    from nets.facenet import Facenet
    from nets.facenet_training import triplet_loss
    from utils.dataloader import FacenetDataset, dataset_collate
    from utils.utils import get_num_classes
    from utils.utils_fit import fit_one_epoch

    spec = json.loads(spec_json)
    size, steps = spec["batch_size"], spec["warmup"] + spec["train_steps"]
    num_classes = get_num_classes(spec["annotation_path"])
    model = Facenet(backbone="mobilenet", num_classes=num_classes, pretrained=False)
    own, saved = model.state_dict(), torch.load(spec["model_path"], map_location="cpu", weights_only=True)
    model.load_state_dict({**own, **{k: v for k, v in saved.items() if k in own and v.shape == own[k].shape}})
    # Its train.py's Init_lr 1e-3 scaled by batch_size / 64 and clamped to [3e-4, 1e-3] for Adam. Neither side
    # applies its epoch schedule here: the learning rate does not change what a step costs.
    lr = min(max(size / 64 * 1e-3, 3e-4), 1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr, betas=(0.9, 0.999), weight_decay=0)
    with open(spec["annotation_path"]) as handle:
        lines = handle.readlines()  # all of them: its 1% validation hold-out does not change a step's cost
    dataset = FacenetDataset(spec["input_shape"], lines, num_classes, random=True)
    loader = DataLoader(dataset, shuffle=True, batch_size=size // 3, num_workers=spec["num_workers"],
                        pin_memory=True, drop_last=True, collate_fn=dataset_collate)
    batches = StampedBatches(loader, steps)
    history = types.SimpleNamespace(append_loss=lambda *args: None)
    # One epoch of `steps` steps, no validation batches, no LFW, CPU, float32, no checkpoint written.
    fit_one_epoch(model.train(), model, history, triplet_loss(), optimizer, 0, steps, 1, batches, [], 100, False,
                  None, size // 3, False, False, None, 10**9, tempfile.gettempdir(), 0)
    with open(result_path, "w") as handle:
        json.dump(batches.result(spec["warmup"], workers=spec["num_workers"], threads=torch.get_num_threads()),
                  handle)


def ours_train(spec_json: str, result_path: str) -> None:
    """Our train.py's set-up (its ``setup``) at the given precision, stepped by its train_one_epoch."""
    import torch

    import train
    from utils.trainer import normalise, setup
    from utils.training import train_one_epoch

    spec = json.loads(spec_json)
    cfg = normalise({**train.settings_of(vars(train)), "input_shape": spec["input_shape"],
                     "batch_size": spec["batch_size"], "precision": spec["precision"],
                     "annotation_path": spec["annotation_path"], "model_path": spec["model_path"],
                     "lfw_eval_flag": False})
    run = setup(cfg, None)
    run.batches.set_epoch(0)
    batches = StampedBatches(run.loader, spec["warmup"] + spec["train_steps"])
    train_one_epoch(run.model_train, batches, run.optimizer, run.criterion, run.device, run.precision,
                    run.channels_last, desc="timed steps", progress=False)
    with open(result_path, "w") as handle:
        json.dump(batches.result(spec["warmup"], workers=run.workers, threads=torch.get_num_threads()), handle)


# ----------------------------------------------------------------------------- the comparison

@dataclass
class Measurement:
    """One successful measurement: which part and side, its process, and the numbers it reported."""

    part: str          # eval | train
    side: str          # original | ours
    precision: str
    run: Run
    numbers: dict      # eval: eval_seconds, accuracy; train: images_per_s ...

    def label(self) -> str:
        return f"{self.part:<5}  {self.side:<8}  {self.precision}"

    def memory(self) -> str:
        return f"peak RSS {self.run.peak_mib:.0f} MiB largest process, {self.run.tree_mib:.0f} MiB process tree"


def resolve(path: str) -> str:
    """A setting's path, relative ones taken from this repository's root."""
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def read_text(path: str) -> str:
    """A file's text with its line ends as they are (the original's files end lines with CR LF)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def write_text(path: str, text: str) -> None:
    """Write ``text`` as it is (no line-end translation)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def check_settings() -> list[str]:
    """Every setting checked before anything runs; returns the parts to run."""
    if not original_dir:
        raise UserError("--original_dir is required: a checkout of github.com/bubbliiiing/facenet-pytorch")
    check_input_shape("input_shape", input_shape)
    check_int("train_steps", train_steps, 1)
    check_int("warmup", warmup, 0)
    check_int("batch_size", batch_size, 3)
    if batch_size % 3:
        raise UserError(f"--batch_size must be a multiple of 3 (the original's triplets), not {batch_size}")
    check_int("pairs_limit", pairs_limit, 0)
    for precision in precisions.split(","):
        check_choice("precisions", precision.strip(), ("fp32", "bf16"))
    chosen = [p.strip() for p in parts.split(",") if p.strip()]
    for part in chosen:
        check_choice("parts", part, ("eval", "train"))
    if not chosen:
        raise UserError("--parts must name eval, train or both")
    for name, path in (("model_path", model_path), ("annotation_path", annotation_path),
                       ("lfw_pairs_path", lfw_pairs_path)):
        if not os.path.isfile(resolve(path)):
            raise UserError(f"--{name} {path}: no such file")
    if not os.path.isdir(resolve(lfw_dir_path)):
        raise UserError(f"--lfw_dir_path {lfw_dir_path}: no such folder")
    return chosen


def check_original(folder: str) -> None:
    """A one-line error unless ``folder`` holds the original's files (our own checkout has others)."""
    for name, mark in ORIGINAL_MARKS.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UserError(f"--original_dir {folder}: no {name} there; give a checkout of "
                            "github.com/bubbliiiing/facenet-pytorch")
        if mark not in read_text(path):
            raise UserError(f"--original_dir {folder}: {name} has no {mark!r}; that is not the original "
                            "github.com/bubbliiiing/facenet-pytorch")


def original_num_workers(folder: str) -> int:
    """The num_workers its train.py sets (its default loader processes)."""
    found = re.search(r"^[ \t]*num_workers[ \t]*=[ \t]*(\d+)", read_text(os.path.join(folder, "train.py")), re.M)
    if not found:
        raise UserError(f"{folder}/train.py: no 'num_workers = N' line; is this the original's train.py?")
    return int(found[1])


def limited_pairs(path: str, limit: int, out: str) -> str:
    """A pairs file of the official layout with about ``limit`` pairs: the first matched and the first
    mismatched pairs of every set, so that both sides still score every fold (the original's 10-fold split is
    contiguous, ours follows the sets). ``path`` itself when ``limit`` is 0 or covers it."""
    lines = [line for line in read_text(path).splitlines() if line.strip()]
    try:
        sets, half = (int(field) for field in lines[0].split())
    except (IndexError, ValueError):
        raise UserError(f"{path}: the first line is not the 'sets pairs_per_half' header of pairs.txt") from None
    keep = max(1, limit // (2 * sets))
    if not limit or keep >= half:
        return path
    body = lines[1:]
    chosen = [body[s * 2 * half + k * half + i] for s in range(sets) for k in (0, 1) for i in range(keep)]
    write_text(out, "\n".join([f"{sets}\t{keep}", *chosen]) + "\n")
    return out


def only_sources(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree filter: the checkout's Python files and their folders."""
    return [n for n in names if n in SKIPPED or (os.path.isfile(os.path.join(folder, n)) and not n.endswith(".py"))]


def patched_copy(original: str, work: str, settings: dict[str, str]) -> tuple[str, list[str]]:
    """A copy of the original's sources in ``work`` with eval_LFW.py's ``settings`` lines set and the
    SOURCE_FIXES applied; returns its folder and one line per patch."""
    copy = os.path.join(work, "original")
    shutil.copytree(original, copy, ignore=only_sources)
    patches = []
    script = os.path.join(copy, "eval_LFW.py")
    text = read_text(script)
    for name, value in settings.items():
        text, count = re.subn(rf"^(?P<head>[ \t]*{name}[ \t]*=[ \t]*).*?(?P<eol>\r?)$",
                              lambda m: m["head"] + value + m["eol"], text, count=1, flags=re.M)
        if not count:
            raise UserError(f"{original}/eval_LFW.py: no '{name} = ...' settings line to set")
        patches.append(f"eval_LFW.py: {name} = {value}")
    write_text(script, text)
    for name, old, new, why in SOURCE_FIXES:
        path = os.path.join(copy, name)
        text = read_text(path)
        if old in text:
            write_text(path, text.replace(old, new))
            patches.append(f"{name}: {old} -> {new} ({why})")
    return copy, patches


def machine() -> str:
    """Cores, CPU model and load average: what the figures depend on."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({usable} usable), {model}, load average {load} at start"


def evaluations(copy: str, work: str, pairs: str, chosen: list[str]) -> list[Measurement]:
    """The original's eval_LFW.py once, then ours once per precision."""
    results = []
    count = sum(1 for line in read_text(pairs).splitlines()[1:] if line.strip())
    print(f"evaluation: {count} pairs from {pairs}; the original embeds both images of every pair "
          f"({2 * count} images), ours each distinct image once")
    result = os.path.join(work, "eval_original.json")
    run = run_measured(worker_command("original_eval", result), copy, os.path.join(work, "eval_original.log"))
    if run.status:
        print(f"eval   original  fp32  {run.failure()}")
    else:
        found = re.search(rf"{ACCURACY_LINE} ([0-9.]+)\+-([0-9.]+)", read_text(run.log))
        with open(result) as handle:
            numbers = json.load(handle)
        numbers["accuracy"] = f"{float(found[1]):.5f} +- {float(found[2]):.5f}" if found else "not printed"
        results.append(report_eval(Measurement("eval", "original", "fp32", run, numbers)))
    for precision in chosen:
        json_path = os.path.join(work, f"eval_ours_{precision}.json")
        args = [sys.executable, "eval_LFW.py", "--model_path", resolve(model_path), "--input_shape",
                str(list(input_shape)), "--lfw_dir_path", resolve(lfw_dir_path), "--lfw_pairs_path", pairs,
                "--precision", precision, "--png_save_path", os.path.join(work, f"roc_ours_{precision}.png"),
                "--json_save_path", json_path]
        run = run_measured(args, ROOT, os.path.join(work, f"eval_ours_{precision}.log"))
        if run.status:
            print(f"eval   ours      {precision}  {run.failure()}")
            continue
        with open(json_path) as handle:
            saved = json.load(handle)
        results.append(report_eval(Measurement("eval", "ours", precision, run, {
            "eval_seconds": saved["wall_seconds"],
            "accuracy": f"{saved['accuracy_mean']:.5f} +- {saved['accuracy_std']:.5f}"})))
    return results


def report_eval(m: Measurement) -> Measurement:
    """Print an evaluation's line as soon as it is measured."""
    print(f"{m.label()}  wall {m.run.wall:7.1f} s  eval {m.numbers['eval_seconds']:7.1f} s  accuracy "
          f"{m.numbers['accuracy']}  {m.memory()}")
    return m


def trainings(copy: str, work: str, original: str, chosen: list[str]) -> list[Measurement]:
    """The original's training steps once (float32), then ours once per precision."""
    spec = {"input_shape": list(input_shape), "batch_size": batch_size, "train_steps": train_steps,
            "warmup": warmup, "annotation_path": resolve(annotation_path), "model_path": resolve(model_path)}
    jobs = [("original", "fp32", copy, "original_train", {**spec, "num_workers": original_num_workers(original)})]
    jobs += [("ours", p, ROOT, "ours_train", {**spec, "precision": p}) for p in chosen]
    results = []
    for side, precision, cwd, function, job in jobs:
        result = os.path.join(work, f"train_{side}_{precision}.json")
        run = run_measured(worker_command(function, json.dumps(job), result), cwd,
                           os.path.join(work, f"train_{side}_{precision}.log"))
        if run.status:
            print(f"train  {side:<8}  {precision}  {run.failure()}")
            continue
        with open(result) as handle:
            m = Measurement("train", side, precision, run, json.load(handle))
        results.append(m)
        n = m.numbers
        print(f"{m.label()}  {n['images_per_s']:7.1f} images/s  ({n['images']} images in {train_steps} steps, "
              f"{n['seconds']:.1f} s; warm-up {n['warmup_seconds']:.1f} s; {n['workers']} loader processes, "
              f"{n['threads']} torch threads)  wall {m.run.wall:.1f} s  {m.memory()}")
    return results


def print_ratios(results: list[Measurement]) -> None:
    """Original / ours for times, ours / original for images/s (above 1: ours is faster); ours / original for
    memory (below 1: ours needs less)."""
    original = {m.part: m for m in results if m.side == "original"}
    rows = []
    for m in results:
        base = original.get(m.part)
        if m.side != "ours" or base is None:
            continue
        if m.part == "eval":
            speed = (f"whole process {base.run.wall / m.run.wall:5.2f}x   evaluation "
                     f"{base.numbers['eval_seconds'] / m.numbers['eval_seconds']:5.2f}x")
        else:
            speed = f"images/s {m.numbers['images_per_s'] / base.numbers['images_per_s']:5.2f}x"
        rows.append(f"  {m.part:<5}  {m.precision}   {speed}   peak RSS {m.run.peak_mib / base.run.peak_mib:4.2f} "
                    f"(largest process), {m.run.tree_mib / base.run.tree_mib:4.2f} (tree) of the original's")
    if rows:
        print("\nratios (original / ours for times, ours / original for images/s and memory):")
        print("\n".join(rows))


def main() -> None:
    print(machine())
    chosen_parts = check_settings()
    original = os.path.abspath(original_dir)
    check_original(original)
    chosen = [p.strip() for p in precisions.split(",")]
    work = tempfile.mkdtemp(prefix="bench_vs_original_")
    pairs = limited_pairs(resolve(lfw_pairs_path), pairs_limit, os.path.join(work, "pairs.txt"))
    copy, patches = patched_copy(original, work, {
        "cuda": "False", "input_shape": repr(list(input_shape)), "model_path": repr(resolve(model_path)),
        "lfw_dir_path": repr(resolve(lfw_dir_path)), "lfw_pairs_path": repr(pairs),
        "png_save_path": repr(os.path.join(work, "roc_original.png"))})
    print(f"original {original} (patched copy in {copy}); ours {ROOT}; logs in {work}")
    print("patches to the copy:\n" + "\n".join(f"  {p}" for p in patches))
    results = []
    if "eval" in chosen_parts:
        results += evaluations(copy, work, pairs, chosen)
    if "train" in chosen_parts:
        print(f"training: {input_shape[0]}x{input_shape[1]}, batch {batch_size} images, {warmup} warm-up + "
              f"{train_steps} timed steps, {resolve(annotation_path)}")
        results += trainings(copy, work, original, chosen)
    print_ratios(results)


if __name__ == "__main__":
    # Imported here, not at the top: the measurement processes import this file inside the original's
    # folder, whose own utils package must be the one they get.
    sys.path.insert(0, ROOT)
    from utils.config import UserError, check_choice, check_input_shape, check_int, configure, run_main

    run_main(lambda: (configure(globals()), main()))
