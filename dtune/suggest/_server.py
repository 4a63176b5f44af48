"""The suggestion process's entry point: ``python /path/to/_server.py FD``.

Run by path, as a plain child process, never through ``multiprocessing``: it does not
import or run the driver's ``__main__`` (a script without a main guard, a script read
from standard input, ``python -c``, a notebook), and it does not import the dtune package
before it has the driver's ``sys.path``. ``FD`` is its end of a socket pair; the driver
sends its ``sys.path`` first, then the model's state (:func:`dtune.suggest.service.serve`).
"""

import sys

if __name__ == "__main__":
    del sys.path[0]  # this script's folder: its modules are not top-level modules

from multiprocessing.connection import Connection


def main(fd: int) -> None:
    conn = Connection(fd)
    sys.path[:] = conn.recv()  # before unpickling what refers to modules
    from dtune.suggest.service import serve

    serve(conn)


if __name__ == "__main__":
    main(int(sys.argv[1]))
