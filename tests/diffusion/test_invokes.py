"""Several invokes in one pipeline call, and `model.trace` on the denoiser."""
import numpy as np
import torch

from diffusion_utils import reference

PROMPTS = ["A cat on a mat", "A dog in the snow"]


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_invokes_match_one_call_with_both_prompts(sd, plain):
    with sd.generate(num_inference_steps=3, seed=0) as tracer:
        with tracer.invoke(PROMPTS[0]):
            text0 = sd.text_encoder.output[0].save()
            first = list().save()
            for step in tracer.iter[:]:
                first.append(sd.unet.output.clone())
            result0 = tracer.result.save()
        with tracer.invoke(PROMPTS[1]):
            text1 = sd.text_encoder.output[0].save()
            second = list().save()
            for step in tracer.iter[:]:
                second.append(sd.unet.output.clone())
            result1 = tracer.result.save()

    ref, ref_preds = reference(plain, PROMPTS, 3, seed=0)  # one call, diffusers' [u0, u1, c0, c1] rows
    assert len(first) == len(second) == 3
    for step in range(3):
        assert first[step].shape == (2, 4, 16, 16)  # [uncond, cond] of its own prompt
        assert torch.allclose(first[step], ref_preds[step][[0, 2]], atol=1e-6)
        assert torch.allclose(second[step], ref_preds[step][[1, 3]], atol=1e-6)
    assert text0.shape[0] == text1.shape[0] == 1 and not torch.equal(text0, text1)
    # tracer.result in an invoke: its own images; after the trace: the whole call's output
    assert len(result0.images) == len(result1.images) == 1
    assert np.array_equal(pixels(result0.images[0]), pixels(ref.images[0]))
    assert np.array_equal(pixels(result1.images[0]), pixels(ref.images[1]))
    assert len(tracer.result.images) == 2
    for mine, theirs in zip(tracer.result.images, ref.images):
        assert np.array_equal(pixels(mine), pixels(theirs))


def test_single_invoke_with_both_prompts_sees_diffusers_rows(sd, plain):
    with sd.generate(PROMPTS, num_inference_steps=2, seed=0) as tracer:
        preds = list().save()
        for step in tracer.iter[:]:
            preds.append(sd.unet.output.clone())
    _, ref_preds = reference(plain, PROMPTS, 2, seed=0)
    for mine, theirs in zip(preds, ref_preds):
        assert torch.allclose(mine, theirs)


def test_write_in_one_invoke_changes_only_its_image(sd, plain):
    with sd.generate(num_inference_steps=4, seed=0) as tracer:
        with tracer.invoke(PROMPTS[0]):
            pass
        with tracer.invoke(PROMPTS[1]):
            for step in tracer.iter[:]:
                if step < 2:
                    sd.unet.output[:] *= 1.5
            result = tracer.result.save()

    def scale_second(i, sample):
        if i < 2:
            sample[[1, 3]] *= 1.5

    ref, _ = reference(plain, PROMPTS, 4, seed=0, hook=scale_second)
    base, _ = reference(plain, PROMPTS, 4, seed=0)
    assert len(result.images) == 1  # the invoke's image
    assert np.array_equal(pixels(result.images[0]), pixels(ref.images[1]))
    assert not np.array_equal(pixels(result.images[0]), pixels(base.images[1]))
    assert np.array_equal(pixels(tracer.result.images[0]), pixels(base.images[0]))  # the other invoke's


def test_uneven_invokes_and_images_per_prompt(sd, plain):
    prompts = ["A red car", "A blue car", "A green car"]
    with sd.generate(num_inference_steps=2, seed=0, num_images_per_prompt=2) as tracer:
        with tracer.invoke(prompts[:2]):
            pair = list().save()
            for step in tracer.iter[:]:
                pair.append(sd.unet.output.clone())
            pair_decoded = sd.vae.decoder.output.save()
        with tracer.invoke(prompts[2]):
            last = list().save()
            for step in tracer.iter[:]:
                last.append(sd.unet.output.clone())
                sd.unet.output[:] *= 0.5
            last_decoded = sd.vae.decoder.output.save()
            result = tracer.result.save()

    def half_last(i, sample):
        sample[[4, 5, 10, 11]] *= 0.5

    # 3 prompts x 2 images: diffusers' rows are [uncond 0..5, cond 0..5], prompt-major.
    ref, ref_preds = reference(plain, prompts, 2, seed=0, hook=half_last, num_images_per_prompt=2)
    for step in range(2):
        assert torch.allclose(pair[step], ref_preds[step][[0, 1, 2, 3, 6, 7, 8, 9]], atol=1e-6)
        assert torch.allclose(last[step], ref_preds[step][[4, 5, 10, 11]] / 0.5, atol=1e-6)
    assert pair_decoded.shape == (4, 3, 32, 32) and last_decoded.shape == (2, 3, 32, 32)
    assert len(result.images) == 2 and len(tracer.result.images) == 6
    for mine, theirs in zip(result.images, ref.images[4:]):
        assert np.array_equal(pixels(mine), pixels(theirs))
    for mine, theirs in zip(tracer.result.images, ref.images):
        assert np.array_equal(pixels(mine), pixels(theirs))


def test_empty_invoke_sees_the_whole_batch(sd, plain):
    with sd.generate(num_inference_steps=2, seed=0) as tracer:
        with tracer.invoke(PROMPTS):
            pass
        with tracer.invoke():
            whole = sd.unet.output.save()
    _, ref_preds = reference(plain, PROMPTS, 2, seed=0)
    assert torch.allclose(whole, ref_preds[0])


def unet_inputs(rows, seed):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(rows, 4, 16, 16, generator=g)
    hidden = torch.randn(rows, 8, 32, generator=g)
    return sample, hidden


def test_trace_calls_the_unet(sd):
    sample, hidden = unet_inputs(2, 0)
    with sd.trace(sample, 10, encoder_hidden_states=hidden):
        mid = sd.unet.mid_block.output.save()
        out = sd.unet.output.save()
        root = sd.output.save()
    with torch.no_grad():
        expected = sd.pipeline.unet(sample, 10, encoder_hidden_states=hidden).sample
    assert torch.allclose(out, expected) and torch.allclose(root, expected)
    assert mid.shape[0] == 2

    direct = sd(sample, 10, encoder_hidden_states=hidden)  # __call__ goes to the unet too
    assert torch.allclose(direct.sample, expected, atol=1e-6)


def test_trace_invokes_batch_unet_inputs(sd):
    (s0, h0), (s1, h1) = unet_inputs(1, 1), unet_inputs(2, 2)
    with sd.trace() as tracer:
        with tracer.invoke(s0, 10, encoder_hidden_states=h0):
            a = sd.unet.output.save()
        with tracer.invoke(s1, 10, encoder_hidden_states=h1):
            sd.unet.output = torch.zeros_like(sd.unet.output)
            b = sd.unet.output.save()
            whole = tracer.result.save()
    with torch.no_grad():
        expected = sd.pipeline.unet(torch.cat([s0, s1]), 10, encoder_hidden_states=torch.cat([h0, h1])).sample
    assert a.shape[0] == 1 and b.shape[0] == 2
    assert torch.allclose(a, expected[:1], atol=1e-5) and torch.count_nonzero(b) == 0
    assert whole.sample.shape[0] == 2 and torch.count_nonzero(whole.sample) == 0  # the invoke's rows


def test_tensor_images_per_invoke_keep_the_pipeline_output_type(sd, plain):
    # output_type="pt": the images are one tensor row per prompt, which the batcher narrows itself;
    # StableDiffusionPipelineOutput's `nsfw_content_detected` is None and has no default, so the
    # narrowed output must be rebuilt without calling its constructor
    with sd.generate(num_inference_steps=2, seed=0, output_type="pt") as tracer:
        with tracer.invoke(PROMPTS[0]):
            first = tracer.result.save()
        with tracer.invoke(PROMPTS[1]):
            second = tracer.result.save()
    ref, _ = reference(plain, PROMPTS, 2, seed=0, output_type="pt")
    assert type(first) is type(second) is type(ref) is type(tracer.result)
    assert first.nsfw_content_detected is None and list(first.keys()) == list(ref.keys())
    assert torch.equal(first.images, ref.images[:1]) and torch.equal(second.images, ref.images[1:])
    assert torch.equal(tracer.result.images, ref.images)
