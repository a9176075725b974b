"""The reference: the plain PyTorch GAN loop a user would write for the same model, to measure
lossbench's trainer against. DataLoader over torchvision MNIST with ToTensor and Normalize, D ending
in nn.Sigmoid with nn.BCELoss, the non-saturating generator loss, `.item()` on both losses every step.
Same mlp architecture, batch size, optimiser and learning rates as lossbench's defaults."""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def models(z_dim: int = 100) -> tuple[nn.Module, nn.Module]:
    G = nn.Sequential(nn.Linear(z_dim, 256), nn.LeakyReLU(0.2), nn.Linear(256, 784), nn.Tanh())
    D = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1), nn.Sigmoid())
    return G, D


def run(root: str, steps: int, batch_size: int = 64, device: str = "cpu", z_dim: int = 100) -> float:
    """Real images per second over `steps` generator steps (after 10 warm-up steps)."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    loader = DataLoader(datasets.MNIST(root, train=True, download=False, transform=tf), batch_size=batch_size,
                        shuffle=True, drop_last=True)  # fmt: skip
    G, D = models(z_dim)
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    done, start = 0, 0.0
    history = []
    while done < steps + 10:
        for real, _ in loader:
            if done == 10:
                start = time.perf_counter()
            real = real.to(device).view(real.size(0), -1)
            ones = torch.ones(real.size(0), 1, device=device)
            zeros = torch.zeros(real.size(0), 1, device=device)
            fake = G(torch.randn(real.size(0), z_dim, device=device))
            opt_d.zero_grad()
            d_loss = bce(D(real), ones) + bce(D(fake.detach()), zeros)
            d_loss.backward()
            opt_d.step()
            opt_g.zero_grad()
            g_loss = bce(D(fake), ones)
            g_loss.backward()
            opt_g.step()
            history.append((d_loss.item(), g_loss.item()))
            done += 1
            if done >= steps + 10:
                break
    return steps * batch_size / (time.perf_counter() - start)
