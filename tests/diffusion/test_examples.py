"""The documented DiffusionModel examples, as written (model name replaced by the tiny pipeline's path)."""
import numpy as np
import torch

from nnsight import DiffusionModel

from diffusion_utils import reference


def test_usage_example(sd_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = DiffusionModel(sd_path)

    with model.generate("A cat sitting on a mat", num_inference_steps=50) as tracer:
        # Access UNet at each denoising step
        for step in tracer.iter[:]:
            unet_out = model.unet.output.save()

        output = tracer.result.save()

    output.images[0].save("cat.png")

    assert (tmp_path / "cat.png").stat().st_size > 0
    assert isinstance(unet_out, torch.Tensor) and unet_out.shape == (2, 4, 16, 16)  # [uncond, cond]
    assert output.images[0].size == (32, 32)


def test_multi_step_example(sd):
    model = sd
    with model.generate("A landscape", num_inference_steps=30) as tracer:
        noise_preds = list().save()

        for step in tracer.iter[:]:
            # Intervene on specific steps
            if step < 10:
                # Early denoising - high-level structure
                model.unet.output[:] *= 1.1

            noise_preds.append(model.unet.output.clone())

    assert len(noise_preds) == 30
    assert all(p.shape == (2, 4, 16, 16) for p in noise_preds)


def test_multi_step_example_matches_plain_hooks(sd, plain):
    """The scaling intervention is exactly a forward hook scaling the first 10 predictions."""
    with sd.generate("A landscape", num_inference_steps=30, seed=3) as tracer:
        noise_preds = list().save()
        for step in tracer.iter[:]:
            if step < 10:
                sd.unet.output[:] *= 1.1
            noise_preds.append(sd.unet.output.clone())
        output = tracer.result.save()

    def scale(i, sample):
        if i < 10:
            sample.mul_(1.1)

    ref, ref_preds = reference(plain, "A landscape", 30, seed=3, hook=scale)
    base, _ = reference(plain, "A landscape", 30, seed=3)
    assert len(ref_preds) == 30
    for mine, theirs in zip(noise_preds, ref_preds):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert np.array_equal(np.asarray(output.images[0]), np.asarray(ref.images[0]))
    # ... and it changes the image.
    assert not np.array_equal(np.asarray(output.images[0]), np.asarray(base.images[0]))

