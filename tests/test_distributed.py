"""fastmomentum.torch.SGD under torch.distributed (gloo, 2 processes on 127.0.0.1): with
DistributedDataParallel and as ZeroRedundancyOptimizer's optimizer_class, ending equal to a
single-process run."""
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import fastmomentum.torch as fmt

WORLD = 2
STEPS = 12
HYPER = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)
TIMEOUT_S = 90


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 2)).double()


def batch(step):
    gen = torch.Generator().manual_seed(100 + step)
    return (torch.randn(8 * WORLD, 6, generator=gen, dtype=torch.float64),
            torch.randn(8 * WORLD, 2, generator=gen, dtype=torch.float64))


def train(model, opt, rank=0, world=1):
    for step in range(STEPS):
        x, y = batch(step)
        x, y = x.chunk(world)[rank], y.chunk(world)[rank]  # each rank its share
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        for mode in ("ddp", "zero"):
            model = make_model()
            ddp = DistributedDataParallel(model)
            if mode == "ddp":
                opt = fmt.SGD(ddp.parameters(), **HYPER)
            else:
                opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=fmt.SGD,
                                              **HYPER)
            train(ddp, opt, rank, WORLD)
            if mode == "zero":
                opt.consolidate_state_dict(to=0)
            if rank == 0:
                result = {"params": [p.detach().clone() for p in model.parameters()],
                          "state": opt.state_dict()}
                torch.save(result, os.path.join(out_dir, f"{mode}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_and_zero_equal_single_process(tmp_path):
    context = mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        # join() returns False while some worker still runs (and raises if one failed)
        while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
            assert time.monotonic() < deadline, "distributed workers did not finish in time"
    finally:
        for p in context.processes:
            if p.is_alive():
                p.kill()

    reference = make_model()
    opt = torch.optim.SGD(reference.parameters(), **HYPER)
    train(reference, opt)
    expected = list(reference.parameters())
    for mode in ("ddp", "zero"):
        result = torch.load(tmp_path / f"{mode}.pt")
        for got, want in zip(result["params"], expected):
            # the gradient mean is summed across ranks in another order: rounding only
            torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    # ZeRO's consolidated state has torch.optim.SGD's layout: it loads into torch.optim.SGD
    zero_state = torch.load(tmp_path / "zero.pt")["state"]
    check = torch.optim.SGD(make_model().parameters(), **HYPER)
    check.load_state_dict(zero_state)
    for p, q in zip(check.param_groups[0]["params"], reference.parameters()):
        torch.testing.assert_close(check.state[p]["momentum_buffer"], opt.state[q][
            "momentum_buffer"], rtol=1e-12, atol=1e-12)
