"""The model files committed in ``prototxt/``: MemNet nets and the release's solver.

``standard_files()`` is the single source of truth; ``tools/make_memnet.py --standard prototxt``
writes them and a test checks the committed copies never drift from it.

They are the original release's (tyshiwo/MemNet ``caffe_files/*``, ``test/*/..._deploy.prototxt``), so
BVLC Caffe, the release's patched Caffe and its MATLAB test scripts read them:

- train nets: HDF5Data with the release's batch sizes (32 for M6R6 and its variants, 24 for M10R10: GPU-memory
  choices; the paper's 64 is ``tools/train.py --batch-size 64``) and ``include { phase: TRAIN }``;
- deploy nets: ``name``, ``input`` and the four ``input_dim`` lines first (the release's ``do_cnn.m``
  rewrites lines 4-6 with the image's size), our comment lines after them;
- the solver (``MemNet_M6R6_80C64_solver.prototxt``, identical for M10R10): base_lr 0.1, momentum 0.9,
  weight_decay 1e-4, step policy with gamma 0.1 every 200000 iterations, clip_gradients 0.01, display 10000,
  snapshot 10000, max_iter 20000000, solver_mode GPU; only fields of Caffe's own caffe.proto.  The release's
  patched Caffe divides clip_gradients by the current lr; stock Caffe and memnet-engine do not, unless
  memnet-engine is told so (``tools/train.py --adjustable-clip``: see ``RELEASE_CLIPPING``).
"""
from __future__ import annotations

from google.protobuf import text_format

from ...core.proto import caffe_pb2 as pb
from ...core.atomic import atomic_output
from .memnet import MemNetConfig, memnet_deploy_net, memnet_train_net

TRAIN_SOURCE = "data/train_list.txt"
PAPER_BATCH_SIZE = 64  # the paper's mini-batch
RELEASE_BATCH_SIZES = {(6, 6): 32, (10, 10): 24}  # (M, R) -> the release's train prototxt batch_size
DEPLOY_INPUT_SHAPE = (1, 1, 144, 144)  # the release's deploy files; restore tools reshape per image
SOLVER_FILE = "memnet_solver.prototxt"
SOLVER_NET = "memnet_m6r6.prototxt"
REGENERATE = "python tools/make_memnet.py --standard prototxt"
RELEASE_CLIPPING = "--adjustable-clip"  # tools/train.py's flag for the patched Caffe's clip_gradients / lr

# file stem -> net; each gives <stem>.prototxt (train) and <stem>_deploy.prototxt
STANDARD_NETS = {
    "memnet_m6r6": MemNetConfig(6, 6, 64),
    "memnet_m10r10": MemNetConfig(10, 10, 64),
    "memnet_m6r6_basic": MemNetConfig(6, 6, 64, multi_supervised=False),
    "memnet_m6r6_nl": MemNetConfig(6, 6, 64, long_term=False),
    "memnet_m6r6_ns": MemNetConfig(6, 6, 64, short_term=False),
}


def default_batch_size(config: MemNetConfig) -> int:
    """The release's batch size for its M6R6 / M10R10 (and their variants), the paper's 64 for any other M, R."""
    return RELEASE_BATCH_SIZES.get((config.blocks, config.recursions), PAPER_BATCH_SIZE)


def describe(config: MemNetConfig) -> str:
    """One line naming a configuration: 'MemNet M6R6 C64 (depth 80), multi-supervised'."""
    parts = ["multi-supervised" if config.multi_supervised else "basic (single supervision)"]
    if not config.long_term:
        parts.append("NL: no long-term connections")
    if not config.short_term:
        parts.append("NS: no short-term connections")
    return (f"MemNet M{config.blocks}R{config.recursions} C{config.channels} (depth {config.depth}), "
            + ", ".join(parts))


def comment(lines: list[str]) -> str:
    """``lines`` as prototxt '# ' comment lines."""
    return "".join(f"# {line}\n" for line in lines)


# The release's solver settings in the release's order (see the module docstring).  ``snapshot_prefix`` is the
# release's ``../../model/MemNet_M6R6_80C64`` (run from caffe_files/<net>/) for this folder, one level down
# from the checkout: snapshots go to the checkout's model/ folder under the release's names.
RELEASE_SOLVER = {
    "net": SOLVER_NET, "base_lr": 0.1, "momentum": 0.9, "weight_decay": 0.0001, "lr_policy": "step",
    "gamma": 0.1, "stepsize": 200000, "clip_gradients": 0.01, "display": 10000, "max_iter": 20000000,
    "snapshot": 10000, "snapshot_prefix": "../model/MemNet_M6R6_80C64", "solver_mode": pb.SolverParameter.GPU,
}
# What tools/train.py uses for a net prototxt: the release's training settings with its patched clipping.
RELEASE_TRAINING = {name: value for name, value in RELEASE_SOLVER.items()
                    if name not in ("net", "snapshot_prefix", "solver_mode")} | {"adjustable_clip": True}


def net_text(net: pb.NetParameter, header_lines: list[str]) -> str:
    """A NetParameter in protobuf text format with comment lines after its header (name, legacy
    input/input_dim): the release's MATLAB test scripts rewrite lines 4-6 of a deploy file."""
    text = text_format.MessageToString(net)
    start = text.find("layer {\n")
    start = len(text) if start < 0 else start
    return text[:start] + comment(header_lines) + text[start:]


def solver_text(settings: dict, header_lines: list[str]) -> str:
    """A SolverParameter's text with its fields in the order of ``settings``, under comment lines."""
    fields = (text_format.MessageToString(pb.SolverParameter(**{name: value})) for name, value in settings.items())
    return comment(header_lines) + "".join(fields)


def standard_files() -> dict[str, str]:
    """File name -> text of every file committed in ``prototxt/``."""
    files = {}
    shape = "x".join(str(d) for d in DEPLOY_INPUT_SHAPE)
    for stem, config in STANDARD_NETS.items():
        batch = default_batch_size(config)
        train = memnet_train_net(config, source=TRAIN_SOURCE, batch_size=batch)
        deploy = memnet_deploy_net(config, input_shape=DEPLOY_INPUT_SHAPE)
        generated = f"Generated by tools/make_memnet.py; regenerate with: {REGENERATE}"
        files[f"{stem}.prototxt"] = net_text(train, [
            f"{describe(config)}: train net (HDF5Data {TRAIN_SOURCE}, batch {batch} as in the release).",
            f"The paper's batch of {PAPER_BATCH_SIZE}: python tools/train.py prototxt/{stem}.prototxt --batch-size "
            f"{PAPER_BATCH_SIZE}", generated])
        files[f"{stem}_deploy.prototxt"] = net_text(deploy, [
            f"{describe(config)}: deploy net (input data {shape}, reshaped per image).", generated])
    files[SOLVER_FILE] = solver_text(RELEASE_SOLVER, [
        "The original MemNet release's solver (MemNet_M6R6_80C64_solver.prototxt): SGD, lr 0.1 divided by 10",
        "every 200000 iterations, clip_gradients 0.01, display, snapshot and max_iter as in the release.",
        "Only Caffe's own fields: BVLC Caffe and the release's patched Caffe load it (run them from this",
        "folder, as the release does: 'net' and 'snapshot_prefix' are relative to the working directory).",
        "Gradient clipping: stock Caffe (and memnet-engine by default) clips the global L2 norm at 0.01; the",
        "release's patched Caffe clips at clip_gradients / current lr (0.1 at lr 0.1).  To train as the release:",
        f"  python tools/train.py prototxt/{SOLVER_FILE} {RELEASE_CLIPPING}",
        f"Generated by tools/make_memnet.py; regenerate with: {REGENERATE}"])
    return files


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename."""
    with atomic_output(path) as f:
        f.write(text.encode("utf-8"))
