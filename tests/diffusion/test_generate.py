"""DiffusionModel.generate: steps, results, components, seeds, plain calls."""
import numpy as np
import pytest
import torch

from diffusion_utils import reference


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_steps_equal_plain_hook_predictions(sd, plain):
    with sd.generate("A red house", num_inference_steps=4, seed=1) as tracer:
        preds = list().save()
        for step in tracer.iter[:]:
            preds.append(sd.unet.output.clone())
        output = tracer.result.save()
    ref, ref_preds = reference(plain, "A red house", 4, seed=1)
    assert len(preds) == len(ref_preds) == 4
    for mine, theirs in zip(preds, ref_preds):
        assert torch.allclose(mine, theirs)
    assert np.array_equal(pixels(output.images[0]), pixels(ref.images[0]))


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_step_count_from_num_inference_steps(sd, steps):
    with sd.generate("A dog", num_inference_steps=steps, seed=0) as tracer:
        seen = list().save()
        for step in tracer.iter[:]:
            seen.append(step)
        after = sd.unet.output.save()  # code after the loop runs, on the last step
        result = tracer.result.save()
    assert seen == list(range(steps))
    assert tracer._steps == steps
    assert after.shape == (2, 4, 16, 16)
    assert len(result.images) == 1


def test_default_step_count_is_the_pipelines(sd):
    assert sd._iteration_steps("generate", {}) == 50
    assert sd._iteration_steps("generate", {"num_inference_steps": 7}) == 7
    assert sd._iteration_steps("trace", {}) is None


def test_iteration_selections(sd, plain):
    with sd.generate("A tree", num_inference_steps=6, seed=2) as tracer:
        picked = list().save()
        for step in tracer.iter[1:5:2]:
            picked.append(sd.unet.output.clone())
    _, ref_preds = reference(plain, "A tree", 6, seed=2)
    assert len(picked) == 2
    assert torch.allclose(picked[0], ref_preds[1]) and torch.allclose(picked[1], ref_preds[3])


def test_output_outside_loop_is_first_step_and_model_output_is_the_unet(sd, plain):
    with sd.generate("A boat", num_inference_steps=3, seed=0):
        args, kwargs = sd.inputs  # in generate, the root stands for the denoiser
        root_in = args[0].save()
        sample_in = sd.unet.input.save()
        first = sd.unet.output.save()
        root = sd.output.save()
    _, ref_preds = reference(plain, "A boat", 3, seed=0)
    assert torch.allclose(first, ref_preds[0]) and torch.allclose(root, ref_preds[0])
    assert sample_in.shape == (2, 4, 16, 16) and torch.equal(root_in, sample_in)


def test_components_are_envoys(sd):
    assert {"unet", "vae", "text_encoder"} <= set(sd._children)
    with sd.generate("A cat", num_inference_steps=2, seed=0) as tracer:
        text = sd.text_encoder.output.save()  # the prompt's encoding (the first call)
        for step in tracer.iter[:]:
            pass
        decoded = sd.vae.decoder.output.save()
        images = tracer.result.save()
    assert text[0].shape[0] == 1 and text[0].shape[-1] == 32
    assert decoded.shape == (1, 3, 32, 32)
    assert images.images[0].size == (32, 32)


def test_vae_write_changes_image(sd):
    with sd.generate("A cat", num_inference_steps=2, seed=0) as tracer:
        base = tracer.result.save()
    with sd.generate("A cat", num_inference_steps=2, seed=0) as tracer:
        sd.vae.decoder.output[:] = 1.0  # all white
        white = tracer.result.save()
    assert not np.array_equal(pixels(base.images[0]), pixels(white.images[0]))
    assert pixels(white.images[0]).min() == 255


def test_assigning_the_unet_output(sd, plain):
    with sd.generate("A lake", num_inference_steps=3, seed=0) as tracer:
        for step in tracer.iter[:]:
            if step == 1:
                sd.unet.output = torch.zeros_like(sd.unet.output)
        out = tracer.result.save()

    def zero(i, sample):
        if i == 1:
            sample.zero_()

    ref, _ = reference(plain, "A lake", 3, seed=0, hook=zero)
    assert np.array_equal(pixels(out.images[0]), pixels(ref.images[0]))


def test_seed_and_generator_are_deterministic(sd):
    with sd.generate("A bird", num_inference_steps=2, seed=5) as tracer:
        a = tracer.result.save()
    with sd.generate("A bird", num_inference_steps=2, generator=torch.Generator().manual_seed(5)) as tracer:
        b = tracer.result.save()
    with sd.generate("A bird", num_inference_steps=2, seed=6) as tracer:
        c = tracer.result.save()
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert not np.array_equal(pixels(a.images[0]), pixels(c.images[0]))
    with pytest.raises(ValueError, match="seed"):
        with sd.generate("A bird", num_inference_steps=2, seed=5, generator=torch.Generator()) as tracer:
            pass


def test_tensor_output_type(sd):
    with sd.generate("A bird", num_inference_steps=2, seed=0, output_type="pt") as tracer:
        images = tracer.result.images.save()
    assert isinstance(images, torch.Tensor) and images.shape == (1, 3, 32, 32)


def test_plain_generate_call_runs_the_pipeline(sd, plain):
    out = sd.generate("A fish", num_inference_steps=2, seed=0)
    ref, _ = reference(plain, "A fish", 2, seed=0)
    assert np.array_equal(pixels(out.images[0]), pixels(ref.images[0]))
    # and no hook stays behind
    assert not sd.unet._module._forward_hooks and not sd.unet._module._forward_pre_hooks


def test_stop_ends_the_pipeline(sd):
    with sd.generate("A fish", num_inference_steps=5, seed=0) as tracer:
        seen = list().save()
        for step in tracer.iter[:]:
            seen.append(step)
            if step == 2:
                tracer.stop()
    assert seen == [0, 1, 2]
    assert not sd.unet._module._forward_hooks and not sd.unet._module._forward_pre_hooks


def test_import_nnsight_does_not_import_diffusers():
    import subprocess
    import sys

    code = "import nnsight, sys; assert 'diffusers' not in sys.modules; from nnsight import DiffusionModel; " \
           "assert 'diffusers' not in sys.modules; print('ok')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "ok", run.stderr


def test_skip_the_unet_at_one_step(sd, plain):
    with sd.generate("A lake", num_inference_steps=3, seed=0) as tracer:
        for step in tracer.iter[:]:
            if step == 1:
                sd.unet.skip(torch.zeros(2, 4, 16, 16))
        out = tracer.result.save()

    def zero(i, sample):
        if i == 1:
            sample.zero_()

    ref, _ = reference(plain, "A lake", 3, seed=0, hook=zero)
    assert np.array_equal(pixels(out.images[0]), pixels(ref.images[0]))
