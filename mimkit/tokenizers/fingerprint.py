"""A tokenizer's fingerprint: a sha256 that changes whenever a tensor deciding its codes changes
(token caches store it to refuse codes of another tokenizer)."""
import hashlib

import torch


def state_fingerprint(header: str, state_dict: dict[str, torch.Tensor], keep) -> str:
    """sha256 hex over `header`, then, in sorted key order, the name, dtype, shape and bytes of every
    tensor whose key passes `keep(key)`."""
    digest = hashlib.sha256(header.encode())
    for key, value in sorted(state_dict.items()):
        if not keep(key):
            continue
        value = value.detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
