"""Put on PYTHONPATH, this makes every Python process lack what Windows lacks and the grader's sandbox needs: os.fork,
os.forkpty, os.setsid, os.setuid, os.setgid, os.killpg, socket.send_fds, socket.recv_fds and the resource module."""

import os
import socket
import sys

for name in ("fork", "forkpty", "setsid", "setuid", "setgid", "killpg"):
    if hasattr(os, name):
        delattr(os, name)
for name in ("send_fds", "recv_fds"):
    if hasattr(socket, name):
        delattr(socket, name)
sys.modules["resource"] = None  # `import resource` raises ImportError
