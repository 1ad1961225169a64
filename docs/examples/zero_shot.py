"""Explain why an image matches a text prompt: a CLIP model as a zero-shot classifier.

Runs offline: a tiny open_clip CLIP with random weights (no download). With a real model, use
``open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")`` and its tokenizer
``open_clip.get_tokenizer("ViT-B-32")``, or a Hugging Face ``CLIPModel`` with its processor.
"""

import open_clip
import torch

import camlens

torch.manual_seed(0)
clip = open_clip.CLIP(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=2, width=64, patch_size=16, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1),
)
prompts = ["a photo of a cat", "a photo of a dog", "a photo of a car"]
model = camlens.zero_shot(clip, prompts)  # classes = prompts, embedded once

x = torch.rand(1, 3, 64, 64)  # an image as the model takes it (use CLIP's normalisation)
logits = model(x)  # logit_scale.exp() x cosine(image, prompt): CLIP's logits_per_image
print("probabilities:", dict(zip(model.labels, logits.softmax(dim=1)[0].tolist())))

exp = camlens.explain(model, x, method="gradcam", target=1)  # why "a photo of a dog"?
print(exp.layer, tuple(exp.maps.shape))  # the last block's input norm of the image tower

rollout = camlens.explain(model, x, method="rollout")  # attention methods read the tower too
model.set_prompts(["a photo of a boat", "a photo of a dog"])  # new classes, re-embedded
print(model.labels, tuple(model(x).shape))
