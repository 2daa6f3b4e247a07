"""Seeded mutation fuzzing of the file readers: prototxt nets and solvers, caffemodel, solverstate, HDF5, npz, images.

Each kind has valid seed files and a loader (what a user's command does with such a file).  Mutants come
from a seeded mutator: truncation, bit flips, random bytes written or inserted, spans duplicated or
deleted, and for text, numbers replaced by absurd ones and lines dropped or repeated.  The mutants run in
child processes (an address-space limit, a timeout per mutant); each ends as

    clean     a MemnetError (the clear message a user gets)     accepted  loaded without complaint
    raw       any other exception (a raw traceback: a defect)   memory    MemoryError (a defect)
    hang      no answer within the timeout (a defect)           crash     the child died (a defect)

    python tests/fuzzing.py --mutants 300                 # every kind, 300 mutants each
    python tests/fuzzing.py --kinds hdf5 image --mutants 50 --rlimit-gb 4 --timeout 30

tests/test_fuzz.py runs a short version in CI.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
GOLDEN = TESTS / "fixtures" / "golden"
SOLVER_FIXTURES = TESTS / "fixtures" / "solver"
OUTCOMES = ("clean", "accepted", "raw", "memory", "hang", "crash")
DEFECTS = ("raw", "memory", "hang", "crash")
ABSURD_NUMBERS = ["0", "-1", "-2147483648", "2147483647", "2147483648", "4294967295", "9223372036854775807",
                  "99999999999999999999999", "100000", "1e308", "-1e308", "nan", "inf", "-0", "0.0001", "65536"]


# ---------------------------------------------------------------------------- mutators
def mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random edits of ``data``."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        n = len(out)
        kind = int(rng.integers(0, 8))
        at = int(rng.integers(0, n)) if n else 0
        if kind == 0 and n:                                    # truncate
            del out[at:]
        elif kind == 1 and n:                                  # flip bits
            for _ in range(int(rng.integers(1, 9))):
                out[int(rng.integers(0, n))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:                                        # overwrite a span with random bytes
            span = int(rng.integers(1, 17))
            out[at:at + span] = rng.integers(0, 256, span, dtype=np.uint8).tobytes()
        elif kind == 3:                                        # insert random bytes
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 33)), dtype=np.uint8).tobytes()
        elif kind == 4 and n:                                  # duplicate a span
            end = min(n, at + int(rng.integers(1, 257)))
            out[end:end] = out[at:end]
        elif kind == 5 and n:                                  # delete a span
            del out[at:at + int(rng.integers(1, 65))]
        elif kind == 6 and n:                                  # an absurd varint / int32 in place
            out[at:at + 5] = bytes(rng.choice([b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x08", b"\xff" * 5,
                                               b"\x00" * 5, b"\xfe\xff\xff\xff\x07"]))
        elif kind == 7 and n:                                  # a large little-endian number
            out[at:at + 4] = int(rng.choice([2**31 - 1, 2**32 - 1, 2**16, 10**9])).to_bytes(4, "little")
    return bytes(out)


def mutate_text(text: str, rng: np.random.Generator) -> str:
    """One to three edits of a prototxt: absurd numbers, lines dropped, repeated or swapped, or byte edits."""
    for _ in range(int(rng.integers(1, 4))):
        lines = text.splitlines(keepends=True) or [""]
        kind = int(rng.integers(0, 8))
        i = int(rng.integers(0, len(lines)))
        if kind <= 3:                                          # a number becomes an absurd one
            numbers = [k for k, line in enumerate(lines) if any(c.isdigit() for c in line)]
            if numbers:
                k = numbers[int(rng.integers(0, len(numbers)))]
                words = lines[k].split(" ")
                spots = [j for j, w in enumerate(words) if w.strip().lstrip("-").replace(".", "", 1).isdigit()]
                if spots:
                    j = spots[int(rng.integers(0, len(spots)))]
                    ending = "\n" if words[j].endswith("\n") else ""
                    words[j] = str(rng.choice(ABSURD_NUMBERS)) + ending
                    lines[k] = " ".join(words)
        elif kind == 4:
            del lines[i]
        elif kind == 5:
            lines.insert(i, lines[int(rng.integers(0, len(lines)))])
        elif kind == 6:
            j = int(rng.integers(0, len(lines)))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            return mutate_bytes("".join(lines).encode(), rng).decode("utf-8", errors="replace")
        text = "".join(lines)
    return text


# ---------------------------------------------------------------------------- seeds and loaders
def _net(path, phase):
    import memnet_engine as me
    net = me.Net(str(path), phase)
    if net.inputs or any(layer.type == "HDF5Data" for layer in net.layers):
        net.forward()
    return net


def seed_files(kind: str, seeds: Path) -> list[Path]:
    """Valid files of ``kind`` in ``seeds`` (made once per child)."""
    import memnet_engine as me
    from memnet_engine.core.convert import caffemodel_arrays, save_npz
    from memnet_engine.core.integrity import unseal
    from memnet_engine.core.weights import read_caffemodel

    seeds.mkdir(parents=True, exist_ok=True)
    made = []
    if kind == "prototxt":
        for name in ("memnet_m2r2_c8_deploy.prototxt", "memnet_m2r2_c8_train.prototxt"):
            text = (GOLDEN / name).read_text().replace('source: "memnet_m2r2_c8_train_list.txt"',
                                                       f'source: "{GOLDEN / "memnet_m2r2_c8_train_list.txt"}"')
            made.append(seeds / name)
            made[-1].write_text(text)
    elif kind == "solver":
        text = (SOLVER_FIXTURES / "tiny_solver.prototxt").read_text()
        made.append(seeds / "tiny_solver.prototxt")
        made[-1].write_text(text.replace('net: "tiny_net.prototxt"', f'net: "{SOLVER_FIXTURES / "tiny_net.prototxt"}"'))
    elif kind == "caffemodel":
        made.append(seeds / "caffe.caffemodel")
        shutil.copy(GOLDEN / "memnet_m2r2_c8_iter_4.caffemodel", made[-1])  # Caffe's: no integrity field
    elif kind == "solverstate":
        solver = me.SGDSolver(str(SOLVER_FIXTURES / "tiny_solver.prototxt"))
        solver.param.snapshot_prefix = str(seeds / "tiny")
        solver.step(2)
        state = Path(solver.snapshot())
        made.append(seeds / "plain.solverstate")  # without the integrity field, so that mutants reach the parser
        made[-1].write_bytes(bytes(unseal(state.read_bytes()).body))
    elif kind == "hdf5":
        made.append(seeds / "tiny.h5")
        shutil.copy(SOLVER_FIXTURES / "tiny_a.h5", made[-1])
    elif kind == "npz":
        arrays = caffemodel_arrays(read_caffemodel(str(GOLDEN / "memnet_m2r2_c8_iter_4.caffemodel")), "golden")
        made.append(seeds / "weights.npz")
        save_npz(str(made[-1]), arrays)
        made.append(seeds / "compressed.npz")
        np.savez_compressed(made[-1], **arrays)
    elif kind == "image":
        from PIL import Image
        pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        for name, mode in (("rgb.png", "RGB"), ("gray.png", "L"), ("photo.jpg", "RGB"), ("x.bmp", "RGB"),
                           ("x.gif", "P"), ("x.tif", "RGB"), ("x.ppm", "RGB")):
            made.append(seeds / name)
            Image.fromarray(pixels).convert(mode).save(made[-1])
    return made


def load(kind: str, path: Path, work: Path) -> None:
    """What a user's command does with a file of ``kind``."""
    import memnet_engine as me
    if kind == "prototxt":
        _net(path, me.TRAIN if "train" in path.name else me.TEST)
    elif kind == "solver":
        me.SGDSolver(str(path))
    elif kind == "caffemodel":
        from memnet_engine.core.convert import read_arrays
        read_arrays(str(path))
        me.Net(str(GOLDEN / "memnet_m2r2_c8_deploy.prototxt"), me.TEST, weights=str(path))
    elif kind == "solverstate":
        me.SGDSolver(str(SOLVER_FIXTURES / "tiny_solver.prototxt")).restore(str(path))
    elif kind == "hdf5":
        (work / "list.txt").write_text(f"{path}\n")
        (work / "net.prototxt").write_text(
            'layer { name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "list.txt" '
            'batch_size: 2 shuffle: true } }')
        net = _net(work / "net.prototxt", me.TRAIN)
        net.layers[0].skip_batches(5)
        net.forward()
    elif kind == "npz":
        from memnet_engine.core.convert import caffemodel_from_arrays, load_npz
        caffemodel_from_arrays(load_npz(str(path)), str(path))
    elif kind == "image":
        from memnet_engine.memnet.imageops import read_image
        read_image(str(path))


KINDS = ("prototxt", "solver", "caffemodel", "solverstate", "hdf5", "npz", "image")


# ---------------------------------------------------------------------------- the child
def worker(kind: str, seed: int, first: int, count: int, work: Path) -> None:
    """Load mutants first..first+count-1 of ``kind``, printing 'START i' before and a JSON result after each."""
    import memnet_engine as me
    warnings.simplefilter("ignore")
    seeds = seed_files(kind, work / "seeds")
    os.chdir(work)
    for i in range(first, first + count):
        rng = np.random.default_rng([seed, KINDS.index(kind), i])
        source = seeds[int(rng.integers(0, len(seeds)))]
        path = work / f"mutant{i}{source.suffix}"
        if source.suffix == ".prototxt":
            path = work / f"mutant{i}_{source.name}"
            path.write_text(mutate_text(source.read_text(), rng))
        else:
            path.write_bytes(mutate_bytes(source.read_bytes(), rng))
        print(f"START {i}", flush=True)
        try:
            load(kind, path, work)
            outcome, detail = "accepted", ""
        except me.MemnetError as ex:
            outcome, detail = "clean", str(ex)[:200]
        except MemoryError as ex:
            outcome, detail = "memory", repr(ex)[:200]
        except Exception as ex:  # the defects being looked for: report them all
            frame = traceback.extract_tb(ex.__traceback__)[-1]
            outcome, detail = "raw", f"{type(ex).__name__}: {str(ex)[:160]} at {frame.filename}:{frame.lineno}"
        print("RESULT " + json.dumps({"i": i, "outcome": outcome, "detail": detail}), flush=True)
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- the parent
def _limit(rlimit_bytes: int):
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (rlimit_bytes, resource.RLIM_INFINITY))
    return apply


def fuzz(kind: str, mutants: int, seed: int = 14, rlimit_gb: float = 3.0, timeout: float = 30.0,
         work: "Path | None" = None) -> dict:
    """Run ``mutants`` mutants of ``kind``; returns {'counts': Counter, 'defects': [(i, outcome, detail)]}."""
    work = Path(tempfile.mkdtemp(prefix=f"fuzz_{kind}_")) if work is None else work
    counts, defects = Counter(), []
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    next_i = 0
    while next_i < mutants:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, str(seed), str(next_i),
                                 str(mutants - next_i), str(work)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=env, preexec_fn=_limit(int(rlimit_gb * 2**30)))
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        running, deadline = None, time.monotonic() + 120  # the child's start-up: imports and seeds
        while True:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                proc.kill()
                proc.wait()
                if running is None:
                    raise RuntimeError(f"the {kind} fuzzing child did not start")
                counts["hang"] += 1
                defects.append((running, "hang", f"no answer in {timeout} s"))
                next_i = running + 1
                break
            line = proc.stdout.readline()
            if not line:  # the child ended
                code = proc.wait()
                if running is not None:  # it died on a mutant
                    counts["crash"] += 1
                    defects.append((running, "crash", f"exit code {code}"))
                    next_i = running + 1
                else:
                    next_i = mutants
                break
            if line.startswith("START "):
                running, deadline = int(line.split()[1]), time.monotonic() + timeout
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
                counts[result["outcome"]] += 1
                if result["outcome"] in DEFECTS:
                    defects.append((result["i"], result["outcome"], result["detail"]))
                running, next_i = None, result["i"] + 1
        proc.stdout.close()
    return {"counts": counts, "defects": defects, "work": work}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=5, metavar=("KIND", "SEED", "FIRST", "COUNT", "WORK"), help=argparse.SUPPRESS)
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    ap.add_argument("--mutants", type=int, default=300, help="mutants per kind (default %(default)s)")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--rlimit-gb", type=float, default=3.0, help="address-space limit of the children")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per mutant before it counts as a hang")
    args = ap.parse_args(argv)
    if args.worker:
        kind, seed, first, count, work = args.worker
        worker(kind, int(seed), int(first), int(count), Path(work))
        return 0
    failed = False
    for kind in args.kinds:
        start = time.monotonic()
        result = fuzz(kind, args.mutants, args.seed, args.rlimit_gb, args.timeout)
        shutil.rmtree(result["work"], ignore_errors=True)
        counts = ", ".join(f"{name} {result['counts'][name]}" for name in OUTCOMES)
        print(f"{kind:12s} {args.mutants} mutants: {counts} ({time.monotonic() - start:.0f} s)", flush=True)
        for i, outcome, detail in result["defects"]:
            failed = True
            print(f"    mutant {i}: {outcome}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
