"""Diffusion tests share one tiny Stable Diffusion pipeline (32x32 images, offline) per module."""
import pytest

transformers = pytest.importorskip("transformers")  # imported before nnsight mounts `.save`
diffusers = pytest.importorskip("diffusers")

import torch  # noqa: E402

from nnsight import DiffusionModel  # noqa: E402

torch.set_num_threads(1)  # the models are tiny: one thread is fastest on a shared machine


@pytest.fixture(scope="module")
def sd(sd_path):
    model = DiffusionModel(sd_path)
    model.pipeline.set_progress_bar_config(disable=True)
    return model


@pytest.fixture(scope="module")
def plain(sd_path):
    """The same pipeline loaded by diffusers alone: the reference runs."""
    pipe = diffusers.DiffusionPipeline.from_pretrained(sd_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe

