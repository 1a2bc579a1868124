"""Plant small bugs, one at a time, and check that the tests catch each (run on demand).

    python benchmarks/mutations.py            # every mutation
    python benchmarks/mutations.py -k cache   # those whose name contains "cache"
    python benchmarks/mutations.py --list
    python benchmarks/mutations.py --baseline # each selection passes on the unmutated code

Each mutation replaces one exact piece of source text in a temporary copy of ``src/`` and
``tests/``, runs the tests named for it there (with a fresh kernel cache), and reports CAUGHT
(the tests fail), SURVIVED (they pass: a test that does not bite) or NOT APPLICABLE (the text is
gone: the code changed; update the mutation). The exit status is 1 when any mutation survived.
The first six are the bugs that survived the test suite in issue 16; the rest guard the
hardening of that issue.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # under src/optimlab/
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments


MUTATIONS = [
    Mutation("chunk boundary: a kernel chunk after the first skips its first element", "kernels/cpu.py",
             "int64_t lo = c * chunk, hi", "int64_t lo = c * chunk + (c > 0), hi",
             ("tests/test_fused.py", "-k", "matches_eager and Adam-lr")),
    Mutation("lr finder: steepest index off by one", "train/lr_finder.py",
             "float(lrs[lo + int(np.argmin(np.gradient(loss[lo:hi])))])",
             "float(lrs[lo + int(np.argmin(np.gradient(loss[lo:hi]))) + 1])",
             ("tests/test_train_lr_finder.py", "-k", "known_curve")),
    Mutation("web: beta2 bound loosened to [0, 1]", "web/schemas.py",
             '"beta2": (0.0, 1.0, False, True)', '"beta2": (0.0, 1.0, False, False)',
             ("tests/test_web_api.py", "-k", "bad_run_request and beta2")),
    Mutation("deepcopy shares the optimizer state", "optim.py",
             "    def __setstate__(self, state: dict[str, Any]) -> None:",
             "    def __deepcopy__(self, memo):\n"
             "        import copy\n"
             "        clone = copy.copy(self)\n"
             "        clone.param_groups = copy.deepcopy(self.param_groups, memo)\n"
             "        return clone\n\n"
             "    def __setstate__(self, state: dict[str, Any]) -> None:",
             ("tests/test_state_dict.py", "-k", "deepcopy")),
    Mutation("divergence does not stop the run", "train/loop.py",
             "if diverged or (stop_at_target and steps_to_target is not None):",
             "if stop_at_target and steps_to_target is not None:",
             ("tests/test_train_tasks.py", "-k", "divergence")),
    Mutation("wrong argument named: Adagrad's lr error says lr_decay", "algorithms/adagrad.py",
             '{"lr": check_nonnegative, "lr_decay"',
             '{"lr": lambda name, value: check_nonnegative("lr_decay", value), "lr_decay"',
             ("tests/test_reliab_bad_input.py", "-k", "name_the_bad_argument")),
    Mutation("kernel cache: digest not checked", "kernels/cpu.py",
             "if hashlib.sha256(data).hexdigest() != expected:", "if False:",
             ("tests/test_kernel_cache.py", "-k", "damaged")),
    Mutation("kernel cache: any folder trusted", "kernels/cpu.py",
             "        reason = untrusted_folder(root)\n", "        reason = None\n",
             ("tests/test_kernel_cache.py", "-k", "never_loaded")),
    Mutation("kernel cache: key symbol not checked", "kernels/cpu.py",
             "    if found != key:\n", "    if found is None:\n",
             ("tests/test_kernel_cache.py", "-k", "damaged")),
    Mutation("kernel cache: no build lock", "kernels/cpu.py",
             "            fcntl.flock(fd, fcntl.LOCK_EX)\n", "            pass\n",
             ("tests/test_kernel_cache.py", "-k", "eight")),
    Mutation("atomic writes: killed writers' temporary files kept", "_atomic.py",
             "    clean_stale(path)\n    tmp = _temporary", "    tmp = _temporary",
             ("tests/test_reliab_checkpoint.py", "-k", "killed")),
    Mutation("centered RMSprop: no clamp of V - G*G", "algorithms/rmsprop.py",
             "var = torch.maximum(v - ga * ga, torch.zeros_like(v))", "var = v - ga * ga",
             ("tests/test_reliab_bad_input.py", "-k", "centered")),
    Mutation("CLI: a corrupt checkpoint ends in a traceback", "checkpoint.py",
             "        except Exception as exc:  # corrupt,", "        except KeyError as exc:  # corrupt,",
             ("tests/test_cli_errors.py", "-k", "bad_checkpoint")),
    Mutation("CLI: only ValueError is one line, the rest tracebacks", "_cli_errors.py",
             "    except Exception as exc:  # noqa: BLE001", "    except ValueError as exc:  # noqa: BLE001",
             ("tests/test_cli_errors.py",)),
]


def run(mutation: Mutation, python: str, timeout: float, baseline: bool = False) -> tuple[str, float]:
    with tempfile.TemporaryDirectory(prefix="optimlab-mutation-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        target = work / "src" / "optimlab" / mutation.path
        text = target.read_text()
        if text.count(mutation.old) != 1:
            return "NOT APPLICABLE", 0.0
        if not baseline:
            target.write_text(text.replace(mutation.old, mutation.new))
        env = {**os.environ, "PYTHONPATH": str(work / "src"), "OPTIMLAB_CACHE_DIR": str(work / "kernels"),
               "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "CAUGHT (timeout)", time.perf_counter() - start
        seconds = time.perf_counter() - start
        if baseline:
            return ("PASSES" if proc.returncode == 0 else "FAILS UNMUTATED"), seconds
        if proc.returncode == 0:
            return "SURVIVED", seconds
        if proc.returncode == 5:  # no test collected: the selection is stale
            return "NOT APPLICABLE (no tests selected)", seconds
        return "CAUGHT", seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="", help="only mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="run each mutation's tests without the mutation (they must pass)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutation (default 900)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k.lower() in m.name.lower()]
    if args.list:
        for m in chosen:
            print(f"{m.name}  [{m.path}; {' '.join(m.tests)}]")
        return 0
    survived = 0
    for m in chosen:
        verdict, seconds = run(m, sys.executable, args.timeout, args.baseline)
        survived += verdict in ("SURVIVED", "FAILS UNMUTATED")
        print(f"{verdict:<16} {seconds:6.1f}s  {m.name}", flush=True)
    print(f"{len(chosen)} mutations: {survived} " + ("failed unmutated" if args.baseline else "survived"))
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
