"""The tokenizers' own small table: method name -> tokenizer class, for the models that hold a
frozen tokenizer (built from the {"method", "model"} spec their config carries). The built-in
VQGAN, MaskGIT VQGAN and VQ-KD are in it; mimkit.registry.register_method adds any other `is_tokenizer` method."""
from ..errors import ConfigError

_TOKENIZERS: dict[str, type] = {}


def register_tokenizer(tokenizer_class: type) -> None:
    """Add a tokenizer class (a Method with is_tokenizer and method_name) to the table."""
    _TOKENIZERS[tokenizer_class.method_name] = tokenizer_class


def tokenizer_class(name: str) -> type:
    """The tokenizer class registered as `name`; ConfigError naming the known ones otherwise."""
    if not _TOKENIZERS:
        from .maskgit_vqgan import MaskGITVQGAN
        from .vqgan import VQGAN
        from .vqkd import VQKD

        register_tokenizer(VQGAN)
        register_tokenizer(MaskGITVQGAN)
        register_tokenizer(VQKD)
    if name not in _TOKENIZERS:
        raise ConfigError(f"{name!r} is not a tokenizer; tokenizers: {', '.join(sorted(_TOKENIZERS))}")
    return _TOKENIZERS[name]
