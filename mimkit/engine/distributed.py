"""The process group around one training run: set up from the environment torchrun gives every
process, and the few collectives the Trainer needs.

    torchrun --nproc_per_node=N -m mimkit train PRESET ...      # N processes, one per GPU (or CPU)

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; `init_distributed` joins
the group they describe (backend nccl on CUDA, gloo on CPU) and returns a `DistContext`. Without
those variables (or WORLD_SIZE=1) it returns the single-process context and every collective
below is a no-op, so the Trainer has one code path.
"""
import atexit
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """rank / world_size of this process in the run, and local_rank on its node (the GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs, pictures and the progress bar."""
        return self.rank == 0


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def init_distributed(device_name: str = "auto", timeout_s: float = 1800) -> DistContext:
    """Join the process group torchrun describes (idempotent); the single-process context without it.

    device_name: train.device; the backend is nccl when it resolves to CUDA, else gloo.
    """
    world = env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank, local_rank = env_int("RANK", 0), env_int("LOCAL_RANK", 0)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ConfigError(f"WORLD_SIZE={world} but {name} is not set; launch with torchrun "
                                  "(it sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)")
        cuda = device_name != "cpu" and not device_name.startswith("cpu") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(shutdown)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def shutdown() -> None:
    """Leave the process group (registered at exit by init_distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """cuda -> cuda:LOCAL_RANK under torchrun (one GPU per process); other devices unchanged."""
    if ctx.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap_ddp(model: torch.nn.Module, device: torch.device, ctx: DistContext) -> torch.nn.Module:
    """DistributedDataParallel around `model` (which keeps its own, unprefixed state dict); the
    model itself in a single process. DDP broadcasts rank 0's weights at construction, averages
    gradients in backward; parameters that get no gradient must have requires_grad=False."""
    if not ctx.enabled or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def mean_over_ranks(values: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Each value averaged over all ranks (one all_reduce); every rank must pass the same keys."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return dict(zip(keys, (packed / ctx.world_size).tolist()))


def all_ranks_true(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Whether `flag` holds on every rank (so all ranks take the same branch, e.g. skip a step)."""
    if not ctx.enabled:
        return flag
    packed = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return packed.item() == 0


def sum_over_ranks(value: int, ctx: DistContext, device: torch.device) -> int:
    if not ctx.enabled:
        return value
    packed = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return int(packed.item())


def gather_objects(obj, ctx: DistContext) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] in a single process)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's `obj` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


# ----------------------------------------------------------------------- FSDP2
def shard_fsdp(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """FSDP2 (torch.distributed.fsdp.fully_shard) in place: every transformer Block is its own
    unit (parameters gathered just for its forward/backward), then the rest of the model. Rank 0's
    weights are broadcast first, so every rank shards the same model."""
    if not ctx.enabled:
        raise ConfigError("train.fsdp=true shards the model over processes: launch with torchrun and "
                          "--nproc_per_node >= 2 (or set train.fsdp=false)")
    from torch.distributed.fsdp import fully_shard

    from ..nn.block import Block

    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor, src=0)
    for module in [m for m in model.modules() if isinstance(m, Block)]:
        fully_shard(module)
    fully_shard(model)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict of a sharded model on rank 0 as CPU tensors ({} on the others; a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """The optimizer state of a sharded model, unsharded and keyed by parameter name, on rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))


def load_full_weights(model: torch.nn.Module, weights: dict) -> None:
    """A full (unsharded) state dict into a sharded model (every rank, each keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer, state: dict) -> None:
    """What full_optimizer_state returned, back into the sharded optimizer (every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
