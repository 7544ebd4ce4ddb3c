"""The Hugging Face CLIP teacher of VQ-KD (issue 15): a CLIPModel directory gives, per patch,
visual_projection(post_layernorm(patch tokens)) - BEiT v2's CLIP target (microsoft/unilm
beit2/modeling_vqkd.py: ln_post of the patch tokens times proj) - of the projection's size, checked
against a reference computed here from the transformers model's own modules; other Hugging Face vision
models (a plain ViT) keep their last_hidden_state patch tokens.

A tiny random CLIP / ViT saved with save_pretrained into a temporary folder; nothing is downloaded.
"""
import pytest
import torch

pytest.importorskip("transformers")
torch.set_num_threads(1)

from mimkit.teacher_loading import load_teacher  # noqa: E402
from mimkit.tokenizers.vqkd import VQKD, VQKDConfig  # noqa: E402


def tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config=dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        text_config=dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8),
        projection_dim=24)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # a random, non-trivial final layer norm, so skipping it would show
        model.vision_model.post_layernorm.weight.normal_(1.0, 0.5)
        model.vision_model.post_layernorm.bias.normal_(0.0, 0.5)
    return model


def clip_reference(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The unilm target written out from the CLIPModel's modules: embeddings -> pre-norm -> encoder,
    drop the class token, post_layernorm, visual_projection."""
    vision = model.vision_model
    with torch.no_grad():
        hidden = vision.pre_layrnorm(vision.embeddings(pixel_values))
        hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
        return model.visual_projection(vision.post_layernorm(hidden[:, 1:]))


def test_clip_teacher_gives_the_projected_normed_patch_tokens(tmp_path):
    model = tiny_clip()
    model.save_pretrained(tmp_path / "clip")
    teacher = load_teacher(tmp_path / "clip")
    assert teacher.grid_size == (4, 4)
    images = torch.rand(2, 3, 16, 16)
    features = teacher(images)
    assert features.shape == (2, 16, 24)  # projection_dim, not the 32-d hidden size
    expected = clip_reference(model, (images - 0.5) / 0.5)  # no preprocessor_config.json: 0.5 / 0.5
    assert torch.allclose(features, expected, atol=1e-5)
    with torch.no_grad():  # and it is not the old target (the tower's last_hidden_state patch tokens)
        old = model.vision_model(pixel_values=(images - 0.5) / 0.5).last_hidden_state[:, 1:]
    assert old.shape[-1] == 32
    assert teacher.output_shape(3, (16, 16)) == (16, 24)
    # a VQ-KD reads its teacher_dim from it
    vqkd = VQKD(VQKDConfig(img_size=16, patch_size=4, in_chans=3, embed_dim=16, depth=1, num_heads=2,
                           decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, codebook_size=8,
                           code_dim=4, teacher_dim=24))
    vqkd.attach_teacher(teacher)
    assert vqkd(images).loss.isfinite()


def test_a_plain_vit_teacher_keeps_its_last_hidden_state_patch_tokens(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    hf = ViTModel(ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=64), add_pooling_layer=False).eval()
    hf.save_pretrained(tmp_path / "vit")
    teacher = load_teacher(tmp_path / "vit")
    assert teacher.module.head is None
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        expected = hf(pixel_values=(images - 0.5) / 0.5).last_hidden_state[:, 1:]
    assert teacher(images).shape == (2, 16, 32)
    assert torch.allclose(teacher(images), expected, atol=1e-5)
