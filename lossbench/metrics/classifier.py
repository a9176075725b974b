"""The project's own MNIST classifier: a small CNN that scores stacked-MNIST modes (one digit per
channel) and gives the penultimate features of the classifier Frechet distance (`fcd`).

Net (60,874 parameters, 245 kB as float32): input 1 x 28 x 28 in [-1, 1] (the generators' range) ->
3 x [conv 3x3 (pad 1) -> ReLU -> max-pool 2] with 16, 32, 64 channels (28 -> 14 -> 7 -> 3) ->
flatten 576 -> FC 64 -> ReLU (the features) -> FC 10 (the logits).

It is trained by `lossbench classifier train` (or `python -m lossbench.metrics.classifier`) on
MNIST's train split, on the CPU with one thread, deterministic algorithms and a fixed seed, so a
re-training on the same machine writes the same bytes. The weights ship inside the package
(lossbench/metrics/weights/mnist_cnn.pt, a plain tensor dict read with weights_only=True) with
mnist_cnn.json beside them: their sha256 (of the tensors, see `sha256`), the command, the seed and
the test accuracy. The sha256 is checked on every load; a file that does not match, or cannot be
read, is refused in one line. Nothing downloads.

PacGAN's own classifier (fjxmlzn/PacGAN, stacked_MNIST_experiments/VEEGAN_experiment/train_mnist.py,
Keras' mnist_cnn demo: 2 convs, dropout, FC 128, 20 epochs of Adadelta, inputs in [0, 1]) is a
different net with the same role; what matters for the metrics is its test accuracy (>= 99%).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from lossbench.errors import MetricError

WEIGHTS = Path(__file__).parent / "weights" / "mnist_cnn.pt"
CARD = WEIGHTS.with_suffix(".json")
SEED = 0
EPOCHS = 5
SHIFT = 2  # training augmentation: each batch moved by up to 2 pixels each way
BATCH = 64
LR = 1e-3
COMMAND = "lossbench classifier train"
FEATURES = 64  # penultimate width: the fcd's feature dimension


class MnistCNN(nn.Module):
    """See the module docstring. `features(x)` is the 64-d penultimate layer, `forward(x)` the logits."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, 16), (16, 32), (32, 64)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 3 * 3, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def sha256(state: dict[str, Tensor]) -> str:
    """sha256 of the weights themselves: each tensor's name, dtype, shape and bytes, in name order.
    Not of the file: torch.save writes a random serialization id into every file it saves, so the
    file's bytes differ between two saves of the same tensors."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def load(path: Path = WEIGHTS, card: Path = CARD) -> MnistCNN:
    """The shipped classifier in eval mode, after checking the file's sha256 against its card; a
    missing, altered or unreadable file is one MetricError line."""
    try:
        expected = json.loads(card.read_text())["sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise MetricError(f"MNIST classifier card {card} is missing or unreadable ({type(exc).__name__}); "
                          f"re-create it with `{COMMAND}`") from None  # fmt: skip
    fix = f"re-create them with `{COMMAND}`"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # absent, truncated, not a tensor archive: many types
        raise MetricError(f"MNIST classifier weights {path} could not be read ({type(exc).__name__}; corrupted?); "
                          f"{fix}") from None  # fmt: skip
    if not isinstance(state, dict) or (actual := sha256(state)) != expected:
        got = f"sha256 {actual[:12]}..." if isinstance(state, dict) else "no tensor dict"
        raise MetricError(
            f"MNIST classifier weights {path} have {got}, expected {expected[:12]}... (corrupted?); {fix}"
        )
    net = MnistCNN()
    net.load_state_dict(state)
    return net.eval()


_CACHE: dict[str, MnistCNN] = {}


def shipped() -> MnistCNN:
    """The shipped classifier, loaded (and checked) once per process."""
    if "net" not in _CACHE:
        _CACHE["net"] = load()
    return _CACHE["net"]


def _batched(fn, images: Tensor, batch: int = 1000) -> Tensor:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return torch.cat([fn(images[i : i + batch].float()) for i in range(0, len(images), batch)])


def predict(images: Tensor, net: MnistCNN | None = None) -> Tensor:
    """Digit labels (N,) of gray images N x 1 x 28 x 28 in [-1, 1]: argmax of the logits."""
    net = net or shipped()
    return _batched(net, images.detach().cpu()).argmax(dim=1)


def features(images: Tensor, net: MnistCNN | None = None) -> Tensor:
    """Penultimate features (N x 64 per channel, concatenated: N x 64C) of images N x C x 28 x 28 in
    [-1, 1]; each channel is classified as one gray digit (C = 3 for stacked MNIST)."""
    net = net or shipped()
    x = images.detach().cpu()
    return torch.cat([_batched(net.features, x[:, c : c + 1]) for c in range(x.shape[1])], dim=1)


def mnist_split(split: str, root: str | None = None) -> tuple[Tensor, Tensor]:
    """MNIST images (N x 1 x 28 x 28 in [-1, 1]) and labels (N,) of a split, from the data root."""
    import torchvision.datasets as tvd

    from lossbench.gan import data

    images = data.load("mnist", root, split, download=False).x
    labels = tvd.MNIST(root=str(data.paths.data_root(root)), train=split == "train", download=False).targets
    return images, torch.as_tensor(labels, dtype=torch.long)


def accuracy(net: MnistCNN, images: Tensor, labels: Tensor) -> float:
    return float((predict(images, net) == labels).double().mean())


def train(root: str | None = None, seed: int = SEED, epochs: int = EPOCHS, log=print) -> tuple[MnistCNN, float]:  # type: ignore[no-untyped-def]
    """Train on the train split (Adam, lr 1e-3 x 0.6^epoch, batch 64, cross-entropy; each batch moved
    by a random shift of up to 2 pixels each way), one CPU thread, deterministic algorithms; returns the
    net and its test accuracy."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = mnist_split("train", root)
    net = MnistCNN()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = LR * 0.6**epoch
        order = torch.randperm(len(x), generator=g)
        net.train()
        start = time.perf_counter()
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            dy, dx = torch.randint(-SHIFT, SHIFT + 1, (2,), generator=g).tolist()
            batch = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))  # MNIST's border is background
            loss = nn.functional.cross_entropy(net(batch), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log(f"epoch {epoch + 1}/{epochs}: last loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    net.eval()
    xt, yt = mnist_split("test", root)
    return net, accuracy(net, xt, yt)


def save(net: MnistCNN, test_accuracy: float, seed: int, path: Path = WEIGHTS, card: Path = CARD) -> str:
    """Write the weights and their card (sha256, command, seed, accuracy); returns the sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    torch.save(state, path)
    digest = sha256(state)
    card.write_text(json.dumps({
        "file": path.name, "sha256": digest, "sha256_of": "the tensors: name, dtype, shape, bytes, in name order",
        "command": COMMAND, "seed": seed, "epochs": EPOCHS,
        "test_accuracy": round(test_accuracy, 6), "parameters": sum(p.numel() for p in net.parameters()),
        "torch": torch.__version__, "trained_on": "MNIST train split (60,000), CPU, 1 thread, deterministic",
    }, indent=2) + "\n")  # fmt: skip
    return digest


def main(root: str | None = None, seed: int = SEED) -> None:
    net, acc = train(root, seed)
    digest = save(net, acc, seed)
    print(f"test accuracy {acc:.4%}; wrote {WEIGHTS} (sha256 {digest})")


if __name__ == "__main__":
    main()
