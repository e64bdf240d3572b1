"""Start-up of predict.py: wall time and peak memory of whole runs, and where the time goes.

    python benchmarks/bench_predict.py
    python benchmarks/bench_predict.py --repo /path/to/an/older/checkout   # the same measurement there

Runs ``predict.py img/1_001.jpg img/1_002.jpg`` headless as a user does, ``runs`` times per mode
(default; ``--figure False``; that and ``--align False``, which never builds the MTCNN detector; ``--onnx_path``
when the ONNX file exists), and prints the median wall time,
the median CPU time (user + system: on a machine shared with other jobs it varies much less than the wall
time) and the peak resident memory of each. Then it times the phases in one fresh process: importing
torch, importing the rest of facenet.py, importing the detector with its NMS and RoIAlign operators (an
older checkout imports torchvision.ops there, which pulls in torch._dynamo), building the model with its weights and the detector, the first and a second
embedding of the two faces, and the figure. Modes that ``repo`` does not have are reported as failed.
"""
#------- settings (edit here or override as --name value) -------
repo = ""                         # "": this repository
runs = 3                          # runs per mode; the median is printed
onnx_path = "model_data/facenet_mobilenet.onnx"  # the ONNX mode runs when this file exists (python export.py)
threads = 0                       # OMP_NUM_THREADS of the runs (0: torch's default)
#------------------------------------------------------------------
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import configure

PAIR = ["img/1_001.jpg", "img/1_002.jpg"]
# Run in a fresh interpreter inside the measured repository; prints its phase times as JSON.
PHASES = """
import json, sys, time
def mark():
    marks.append((time.perf_counter(), time.process_time()))
marks = []
mark()
import torch
mark()
import facenet
mark()
import utils.detect  # an older checkout imports torchvision.ops here; this one loads only its operators
getattr(utils.detect, "load_vision_ops", lambda: None)()
mark()
model = facenet.Facenet(figure_path=sys.argv[1])
mark()
model.embed(sys.argv[2:])
mark()
model.embed(sys.argv[2:])
mark()
model.detect_image(*sys.argv[2:])
mark()
steps = [[b[0] - a[0], b[1] - a[1]] for a, b in zip(marks, marks[1:])]
steps[-1] = [steps[-1][0] - steps[-2][0], steps[-1][1] - steps[-2][1]]
names = ["import torch", "import facenet (the rest)", "the detector and its NMS / RoIAlign operators",
         "model, weights and MTCNN", "first embedding of 2 faces",
         "second embedding", "figure (detect_image less an embedding)"]
print(json.dumps(dict(zip(names, steps))))
"""


def timed_run(args: list[str], cwd: str, env: dict) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds, peak RSS in MiB and exit status of one process (its own rusage, via wait4)."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return (time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
            process.returncode)


def main() -> None:
    root = os.path.abspath(repo or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, MPLBACKEND="Agg")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    figure = os.path.join(tempfile.mkdtemp(), "result.png")
    modes = {"default (figure saved)": [], "--figure False": ["--figure", "False"],
             "--figure False --align False": ["--figure", "False", "--align", "False"]}
    if os.path.isfile(os.path.join(root, onnx_path)):
        modes["--onnx_path (onnxruntime)"] = ["--onnx_path", onnx_path]
    print(f"{root}: python predict.py {' '.join(PAIR)}, {runs} runs per mode, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}")
    for name, extra in modes.items():
        results = [timed_run([sys.executable, "predict.py", *PAIR, "--figure_path", figure, *extra], root, env)]
        if results[0][3] != 0:
            print(f"  {name:<30} failed (exit status {results[0][3]}): not available in this checkout")
            continue
        results += [timed_run([sys.executable, "predict.py", *PAIR, "--figure_path", figure, *extra], root, env)
                    for _ in range(runs - 1)]
        print(f"  {name:<30} {statistics.median(r[0] for r in results):6.2f} s wall, "
              f"{statistics.median(r[1] for r in results):5.2f} s CPU, peak RSS {max(r[2] for r in results):.0f} MiB"
              f"  (wall of each run: {', '.join(f'{r[0]:.2f}' for r in results)})")
    done = subprocess.run([sys.executable, "-c", PHASES, figure, *PAIR], cwd=root, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"error: the phase timing failed: {done.stderr.strip().splitlines()[-1]}")
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    print("phases in one process (default settings), wall and CPU seconds:")
    for phase, (wall, cpu) in phases.items():
        print(f"  {phase:<42} {wall:6.3f} s  {cpu:6.3f} s")


if __name__ == "__main__":
    configure(globals())
    main()
