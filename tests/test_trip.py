"""The longest trip from run/test.py enters at most six library files.

What is measured: ``run/test.py``'s ``main`` runs a tiny CCI prediction in this process under
``sys.setprofile``. At every call of a function defined in ``src/malpyeong``, the call stack is
walked and the distinct *library files* on it are collected; the trip's length is the largest
such set over the whole run (the deepest chain of files one answer passes through: for CCI the
prediction job, the answering path, option scoring, the length budget, the task interface and
the task).

A library file is a module of ``src/malpyeong`` except:

- the ground floor (``errors.py``, ``io.py``, ``rules.py``, ``device.py``, ``data.py``,
  ``cli.py``): the error type, atomic files, the device default, reading items through a task,
  progress bars -- helpers every layer may call, which stand beside the path of an answer rather
  than on it (a reader following a prediction does not open them to see where it goes);
- package ``__init__.py`` files and module bodies (frames of imports are not trips);
- the script itself (``run/test.py`` is not in ``src``).

The routed prediction (``--route``, each item to its category's expert) is measured by
``tests/test_routing.py`` with the same tracer.
"""

from __future__ import annotations

import json
import os
import sys

from conftest import ROOT, SAMPLES, load_script

SRC = ROOT / "src" / "malpyeong"
GROUND_FLOOR = {"errors.py", "io.py", "rules.py", "device.py", "data.py", "cli.py", "__init__.py"}
LIMIT = 6


class Trip:
    """Records, while active, the largest set of library files on one call stack."""

    def __init__(self) -> None:
        self.prefix = str(SRC) + os.sep
        self.longest: list[str] = []

    def files_on(self, frame) -> list[str]:
        """The library files on ``frame``'s stack, outermost first."""
        found: list[str] = []
        while frame is not None:
            code = frame.f_code
            if code.co_filename.startswith(self.prefix) and code.co_name != "<module>":
                rel = code.co_filename[len(self.prefix) :]
                if rel.rsplit(os.sep, 1)[-1] not in GROUND_FLOOR and rel not in found:
                    found.append(rel)
            frame = frame.f_back
        return found[::-1]

    def _profile(self, frame, event, arg) -> None:
        # a deeper stack of library files can only start at a call into the library
        if event == "call" and frame.f_code.co_filename.startswith(self.prefix):
            files = self.files_on(frame)
            if len(files) > len(self.longest):
                self.longest = files

    def __enter__(self) -> Trip:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)


def test_the_longest_trip_from_run_test_py_enters_at_most_six_library_files(tiny_llama, tmp_path, capsys):
    items = json.loads((SAMPLES / "cci_dev.json").read_text(encoding="utf-8"))[:2]
    data = tmp_path / "cci.json"
    data.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "pred.json"
    main = load_script("run/test.py").main
    argv = ["--model", str(tiny_llama), "--task", "cci", "--input", str(data), "--output", str(out)]
    with Trip() as trip:
        assert main([*argv, "--no_progress", "--device", "cpu"]) == 0
    assert out.is_file()
    print(f"longest trip ({len(trip.longest)} library files): {' > '.join(trip.longest)}", file=sys.stderr)
    # the measurement sees the whole path: the job, the answering path and the task
    assert {"inference/predict.py", "inference/answer.py", "tasks/cci.py"} <= set(trip.longest)
    assert len(trip.longest) <= LIMIT, trip.longest


def test_the_tracer_counts_distinct_library_files_only():
    """The measure itself, on functions compiled as if they lived in the library: a stack
    inference/a.py -> tasks/b.py -> tasks/b.py -> io.py counts two files (a file entered twice
    counts once; the ground floor and module bodies not at all)."""
    seen: list[list[str]] = []
    trip = Trip()
    namespace = {"probe": lambda: seen.append(trip.files_on(sys._getframe(1)))}

    def define(source: str, where: str) -> None:
        exec(compile(source, str(SRC / where), "exec"), namespace)

    define("def h():\n    probe()\n", "io.py")
    define("def g(n):\n    return g(n - 1) if n else h()\n", "tasks/b.py")
    define("def f():\n    g(1)\n", "inference/a.py")
    define("f()\n", "inference/c.py")  # a module body: an import, not a trip
    assert seen == [[os.path.join("inference", "a.py"), os.path.join("tasks", "b.py")]]
