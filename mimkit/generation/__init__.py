"""Floor 4: masked-token decoding (MaskedTokenSampler, separate from any model) and the pipelines
that use it: generate, inpaint, outpaint and edit images with a masked token model (MaskGIT, MAGE)."""
from .blur import gaussian_blur, gaussian_kernel1d
from .image_pipeline import MaskedImagePipeline, PipelineOutput, to_pil
from .pipelines import edit, generate, inpaint, outpaint
from .regions import SIDES, box_mask, outpaint_region, tokens_of_pixels
from .sampler import GUIDANCE_RAMPS, MaskedTokenSampler
from .token_model import check_token_model, resolve_labels

__all__ = ["gaussian_blur", "gaussian_kernel1d", "MaskedImagePipeline", "PipelineOutput", "to_pil", "edit",
           "generate", "inpaint", "outpaint", "SIDES", "box_mask", "outpaint_region", "tokens_of_pixels",
           "GUIDANCE_RAMPS", "MaskedTokenSampler", "check_token_model", "resolve_labels"]
