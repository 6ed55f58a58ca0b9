"""How a patient's files are split into Dask tasks (tasks.documents.batches)."""

from __future__ import annotations

from patient_docs.settings import Settings
from tasks.documents import batches

FILES = [f"f{i}.txt" for i in range(3000)]


def test_at_real_durations_every_file_is_its_own_task():
    parts = batches(FILES, Settings(time_scale=1.0))  # 2 s a conversion > 0.5 s a task
    assert len(parts) == 3000 and all(len(p) == 1 for p in parts)


def test_compressed_time_batches_enough_to_outweigh_the_cost_of_a_task():
    parts = batches(FILES, Settings(time_scale=0.05))  # 0.1 s a conversion: 5 per 0.5 s task
    assert [len(p) for p in parts] == [5] * 600
    assert [f for p in parts for f in p] == FILES  # every file once, in order


def test_a_small_patient_still_spreads_over_all_slots():
    parts = batches(FILES[:16], Settings(time_scale=0.01))  # 0.02 s each: 25 would fit a task
    assert [len(p) for p in parts] == [2] * 8
    assert batches([], Settings()) == [] and batches(FILES[:1], Settings(time_scale=0.01)) == [FILES[:1]]
    assert len(batches(FILES[:16], Settings(conversion_batch_seconds=0, time_scale=0.01))) == 16
