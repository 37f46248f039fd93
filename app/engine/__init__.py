"""The engine: what happens to a batch file and to a command, one module per stage.

``monitor`` (the thread, the queue, the life cycle) hands a file to ``intake``
(read, validate, quarantine), each model's ``runner`` (which calls ``assess``
and ``train``), then ``commit``; commands go to ``dispatch``. The stages never
import the monitor.
"""
