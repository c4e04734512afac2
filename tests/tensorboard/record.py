"""Writes one scalar event with TensorBoard's own Python record writer to stdout.

Usage: record.py WALL_TIME STEP TAG VALUE
"""
import io
import sys

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

wall_time, step, tag, value = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
event = event_pb2.Event(
    wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
)
buffer = io.BytesIO()
RecordWriter(buffer).write(event.SerializeToString())
sys.stdout.buffer.write(buffer.getvalue())
