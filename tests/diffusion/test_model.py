"""Building a DiffusionModel: paths, pipelines, automodel, rename, the envoy tree."""
import diffusers
import torch

from nnsight import DiffusionModel
from nnsight.modeling.diffusion import Diffuser


def test_loaded_pipeline_and_automodel(sd_path, plain):
    by_object = DiffusionModel(plain)
    assert by_object.pipeline is plain and by_object.unet._module is plain.unet
    by_class = DiffusionModel(sd_path, automodel=diffusers.StableDiffusionPipeline)
    by_name = DiffusionModel(sd_path, automodel="StableDiffusionPipeline", dtype=torch.float32)
    assert type(by_class.pipeline) is type(by_name.pipeline) is diffusers.StableDiffusionPipeline
    assert by_class.repo_id == sd_path
    assert isinstance(by_class._module, Diffuser) and by_class._module.denoiser_name == "unet"


def test_envoy_tree_and_repr(sd):
    assert sd.unet.mid_block.path == "model.unet.mid_block"
    assert sd.vae.decoder.path == "model.vae.decoder"
    text = repr(sd)
    assert "unet" in text and "text_encoder" in text and "vae" in text


def test_rename(sd_path):
    model = DiffusionModel(sd_path, rename={"unet": "denoiser"})
    model.pipeline.set_progress_bar_config(disable=True)
    with model.generate("A hill", num_inference_steps=2, seed=0) as tracer:
        for step in tracer.iter[:]:
            out = model.denoiser.output.save()
    assert out.shape == (2, 4, 16, 16)


def test_nnsight_top_level_export():
    import nnsight
    import nnsight.modeling

    assert nnsight.DiffusionModel is nnsight.modeling.DiffusionModel is DiffusionModel
