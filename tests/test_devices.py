"""The worker's devices (tunelab/jobs/devices.py): what it has, what a job needs, what it is
handed, and that reservations never oversubscribe."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from tunelab.jobs import devices
from tunelab.jobs.devices import Devices, Gpu, Inventory, Need, Reservation, declared_gpus, need_of


@pytest.mark.parametrize("text, memories", [
    ("0", []), ("1", [0]), ("2", [0, 0]), ("24000", [24000]), ("24000, 80000", [24000, 80000]),
])
def test_declared_gpus(text, memories):
    gpus = declared_gpus(text)
    assert [g.memory_mb for g in gpus] == memories
    assert [g.index for g in gpus] == list(range(len(memories)))


@pytest.mark.parametrize("text", ["two", "1,x", "-1"])
def test_declared_gpus_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="TUNELAB_WORKER_GPUS"):
        declared_gpus(text)


def test_inventory_from_settings_and_from_the_machine(monkeypatch):
    inv = devices.inventory(SimpleNamespace(worker_gpus="2"))
    assert inv.declared and len(inv.gpus) == 2 and inv.cpus >= 1 and inv.node
    monkeypatch.setattr(devices, "nvidia_smi_gpus", lambda: [Gpu(0, "GPU-aaa", 80000), Gpu(1, "GPU-bbb", 80000)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb")
    assert devices.inventory(SimpleNamespace(worker_gpus=None)).gpus == (Gpu(1, "GPU-bbb", 80000),)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert [g.index for g in devices.inventory(SimpleNamespace(worker_gpus=None)).gpus] == [1, 0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.inventory(SimpleNamespace(worker_gpus=None)).gpus == ()


@pytest.mark.parametrize("gpus, spec, need", [
    (0, {}, Need(1, 0, 1)),
    (0, {"processes": 2}, Need(2, 0, 2)),
    (2, {"processes": 2}, Need(2, 2, 2)),
    (1, {"strategy": "lora"}, Need(1, 1, 1)),
])
def test_need_of(gpus, spec, need):
    assert need_of(spec, Inventory("n", 8, tuple(Gpu(i) for i in range(gpus)))) == need


def test_a_cpu_worker_runs_one_job_with_all_its_cpus():
    box = Devices(Inventory("n", 4), max_jobs=1)
    held = box.reserve("a", Need(1, 0, 1))
    assert held.cpus == 4 and held.gpus == ()
    assert box.reserve("b", Need(1, 0, 1)) is None          # one at a time, as before
    box.release("a")
    assert box.reserve("b", Need(2, 0, 2)).cpus == 4


def test_a_cpu_worker_with_two_slots_splits_its_cpus():
    box = Devices(Inventory("n", 4), max_jobs=2)
    assert box.reserve("a", Need(1, 0, 1)).cpus == 2
    assert box.why_not(Need(4, 0, 4)).startswith("waiting for CPUs")
    assert box.reserve("b", Need(1, 0, 1)).cpus == 2
    assert box.reserve("c", Need(1, 0, 1)) is None


def test_gpus_are_never_given_twice_and_their_cpus_go_with_them():
    box = Devices(Inventory("n", 8, (Gpu(0, "GPU-a"), Gpu(1, "GPU-b"), Gpu(2, "GPU-c"))), max_jobs=3)
    a = box.reserve("a", Need(2, 2, 2))
    assert [g.index for g in a.gpus] == [0, 1] and a.cpus == 5
    assert box.why_not(Need(2, 2, 2)) == "waiting for a GPU: it needs 2 and 1 of this worker's 3 is free"
    b = box.reserve("b", Need(1, 1, 1))
    assert [g.index for g in b.gpus] == [2] and b.cpus == 2
    assert box.reserve("c", Need(1, 1, 1)) is None
    box.release("a")
    assert [g.index for g in box.reserve("c", Need(1, 1, 1)).gpus] == [0]


def test_a_job_bigger_than_the_worker_says_so():
    box = Devices(Inventory("n", 2, (Gpu(0),)), max_jobs=1)
    assert "needs 2 GPUs" in box.never_fits(Need(2, 2, 2))
    assert box.reserve("a", Need(2, 2, 2)) is None
    assert "needs 4 CPUs" in Devices(Inventory("n", 2), 1).why_not(Need(4, 0, 4))


def test_concurrent_reservations_never_oversubscribe():
    box = Devices(Inventory("n", 16, tuple(Gpu(i) for i in range(4))), max_jobs=8)
    got, barrier = [], threading.Barrier(16)

    def grab(i):
        barrier.wait()
        held = box.reserve(f"j{i}", Need(1, 1, 1))
        if held:
            got.append(held)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(got) == 4
    assert sorted(g.index for r in got for g in r.gpus) == [0, 1, 2, 3]
    assert sum(r.cpus for r in got) <= 16


@pytest.mark.parametrize("held, base, want", [
    # its GPUs by uuid, its CPUs, threads = CPUs / processes
    (Reservation("j", 2, 8, (Gpu(3, "GPU-x"), Gpu(5, "GPU-y"))), {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5"},
     {"CUDA_VISIBLE_DEVICES": "GPU-x,GPU-y", "TUNELAB_JOB_CPUS": "8", "OMP_NUM_THREADS": "4"}),
    # a declared GPU has no uuid: its index
    (Reservation("j", 1, 2, (Gpu(1),)), {}, {"CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "2"}),
    # a CPU job sees no GPU; the operator's OMP_NUM_THREADS caps the threads
    (Reservation("j", 1, 4), {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "1"},
     {"CUDA_VISIBLE_DEVICES": None, "TUNELAB_JOB_CPUS": "4", "OMP_NUM_THREADS": "1"}),
    # more processes than CPUs: one thread each
    (Reservation("j", 4, 2), {}, {"OMP_NUM_THREADS": "1", "TUNELAB_JOB_CPUS": "2"}),
])
def test_the_env_a_job_gets(held, base, want):
    env = held.env({"PATH": "/bin", **base})
    assert env["PATH"] == "/bin"
    for key, value in want.items():
        assert env.get(key) == value, key


def test_placement_says_where_it_runs():
    inv = Inventory("node-1", 8, (Gpu(0, "GPU-a", 80000), Gpu(1, "GPU-b", 80000)))
    placed = Reservation("j", 2, 8, inv.gpus).placement(inv, "sandbox", "node-1:42:abc", {})
    assert placed["devices"] == ["gpu:0", "gpu:1"] and placed["processes"] == 2
    assert placed["threads_per_process"] == 4 and placed["gpus"][1]["uuid"] == "GPU-b"
    assert devices.placement_line(placed) == "Runs on node-1: gpu:0, gpu:1, 2 processes"
    cpu = Reservation("j", 1, 2).placement(Inventory("n", 2), "local", "w", {})
    assert devices.placement_line(cpu) == "Runs on n: cpu x2, 1 process"


def test_default_jobs_at_once():
    assert Inventory("n", 8).default_max_jobs() == 1
    assert Inventory("n", 8, (Gpu(0), Gpu(1))).default_max_jobs() == 2
    settings = SimpleNamespace(worker_gpus="3", worker_max_jobs=None)
    assert Devices.of(settings).max_jobs == 3
    settings.worker_max_jobs = 1
    assert Devices.of(settings).max_jobs == 1


def test_a_cluster_executor_places_jobs_itself(monkeypatch):
    """Devices of another machine: only the jobs at once are counted here; a job's GPUs are
    counted (for the quota) but named by the executor on the node, not in the env."""
    import tunelab.billing.devices as billing_devices

    monkeypatch.setattr(billing_devices, "detect", lambda: ("gpu:h100", 1))
    box = Devices.of(SimpleNamespace(worker_gpus=None, worker_max_jobs=2), elsewhere=True)
    need = box.need_of({"strategy": "lora", "processes": 8})
    assert need == Need(8, 8, 8) and box.why_not(need) is None
    held = box.reserve("a", need)
    assert len(held.gpus) == 8 and held.cpus >= 8 and "CUDA_VISIBLE_DEVICES" not in held.env({"CUDA_VISIBLE_DEVICES": "0"})
    assert held.placement(box.inv, "ray", "w", {})["devices"] == ["gpu x8"]
    assert box.reserve("b", need) is not None and box.reserve("c", need) is None


@pytest.mark.parametrize("strategy, raw, want", [
    ("lora", "2", 2), ("lora", "", 1), ("linear-probe", "4", 1), (None, "3", 1),
])
def test_the_wizards_processes(strategy, raw, want):
    """The new-job wizard's "Processes": only for strategies with a loop to spread (`distributed`)."""
    from tunelab.web import wizard

    assert wizard.processes_from_form(strategy, raw) == want
    assert wizard.distributed("lora") and not wizard.distributed("linear-probe")
