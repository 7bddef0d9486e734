"""Device choice, seeding, and the static-HTML interactive figure."""
from __future__ import annotations

import ipywidgets
import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import metabook_learn  # noqa: E402
from metabook_learn.widgets import figure_to_png, frame_slider  # noqa: E402


def test_pick_device_defaults_to_what_torch_sees(monkeypatch, capsys):
    monkeypatch.delenv("METABOOK_DEVICE", raising=False)
    device = metabook_learn.pick_device()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "metabook computes on:" in capsys.readouterr().out


def test_pick_device_honours_the_environment(monkeypatch):
    monkeypatch.setenv("METABOOK_DEVICE", "cpu")
    assert metabook_learn.pick_device(verbose=False) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_asking_for_a_missing_gpu_says_what_to_do():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        metabook_learn.pick_device("cuda", verbose=False)


def test_seed_everything_makes_python_numpy_and_torch_repeatable():
    import random

    import numpy as np

    def draw():
        return random.random(), float(np.random.rand()), torch.randn(5)

    metabook_learn.seed_everything(3)
    first = draw()
    metabook_learn.seed_everything(3)
    second = draw()
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    metabook_learn.seed_everything(4)
    assert not torch.equal(draw()[2], first[2])


def test_frame_slider_links_slider_to_frames_in_the_browser():
    frames = []
    for i in range(3):
        figure = plt.figure(figsize=(1, 1))
        plt.plot([0, i])
        frames.append(figure_to_png(figure))
    assert all(png.startswith(b"\x89PNG") for png in frames)
    assert plt.get_fignums() == [], "figure_to_png must close the figure"
    box = frame_slider(frames, "step", start=1)
    slider, stack = box.children
    assert isinstance(stack, ipywidgets.Stack) and stack.selected_index == 1
    assert [image.value for image in stack.children] == frames
    links = [w for w in ipywidgets.widgets.widget._instances.values() if isinstance(w, ipywidgets.widgets.widget_link.Link)]
    assert any(link.source == (slider, "value") and link.target == (stack, "selected_index") for link in links)


def test_frame_slider_rejects_no_frames():
    with pytest.raises(ValueError, match="at least one frame"):
        frame_slider([])
