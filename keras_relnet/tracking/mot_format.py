"""The MOTChallenge text format: one object per line,
`frame, id, left, top, width, height, confidence, x, y, z` (1-based frames;
id -1 for detections; the world coordinates -1 when unknown)."""

import collections
import pathlib

import numpy as np


class MotTable(collections.namedtuple("MotTable", ["frames", "ids", "boxes", "scores"])):
    """Objects of a sequence, one row each, sorted by frame.

    `frames [K]` int (1-based), `ids [K]` int (-1: unknown), `boxes [K, 4]`
    float `(left, top, width, height)` in pixels, `scores [K]` float.
    `len(table)` is the number of rows; `_replace` and the other named-tuple
    methods work on the four columns.

    Example:
    >>> table = MotTable.from_rows([1, 1], [1, 2], [[0, 0, 1, 1], [2, 2, 1, 1]])
    >>> len(table), table._replace(ids=np.array([5, 6])).ids.tolist()
    (2, [5, 6])
    """

    __slots__ = ()

    @classmethod
    def from_rows(cls, frames, ids, boxes, scores=None):
        """A table from array-likes, sorted by (frame, id), with checked shapes.

        Example:
        >>> MotTable.from_rows([2, 1], [7, 3], [[0, 0, 1, 1], [5, 5, 2, 2]]).ids.tolist()
        [3, 7]
        """
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = (np.ones(len(frames)) if scores is None
                  else np.asarray(scores, dtype=np.float64).reshape(-1))
        if not len(frames) == len(ids) == len(boxes) == len(scores):
            raise ValueError(f"`frames`, `ids`, `boxes` and `scores` must have one row per "
                             f"object; received {len(frames)}, {len(ids)}, {len(boxes)} and "
                             f"{len(scores)} rows.")
        order = np.lexsort((ids, frames))
        return cls(frames[order], ids[order], boxes[order], scores[order])

    def frame(self, frame):
        """The row indices of one frame."""
        start, stop = np.searchsorted(self.frames, [frame, frame + 1])
        return np.arange(start, stop)

    def take(self, rows):
        """The table of the given rows."""
        return MotTable(*(column[rows] for column in self))

    def __len__(self):
        return len(self.frames)

    @classmethod
    def _make(cls, iterable):
        # NamedTuple's own _make (which _replace calls) checks len(), which
        # here counts rows, not the four columns.
        columns = tuple(iterable)
        if tuple.__len__(columns) != len(cls._fields):
            raise TypeError(f"MotTable takes {len(cls._fields)} columns {cls._fields}; "
                            f"received {tuple.__len__(columns)}.")
        return tuple.__new__(cls, columns)


def check_unique_ids(table, source):
    """Refuses a table with two rows of one id in one frame.

    A tracker's output or a ground truth with such rows gives metrics that
    mean nothing (an IDF1 above 100%), so they are an error.

    Args:
        table: a `MotTable` (sorted by frame and id, as `from_rows` makes it).
        source: what the table is, for the message (a file, "the hypotheses
            of sequence 'a'").

    Raises:
        ValueError: naming `source`, the frame and the id.

    Example:
    >>> check_unique_ids(MotTable.from_rows([1, 1], [2, 2], [[0, 0, 1, 1]] * 2), "gt.txt")
    Traceback (most recent call last):
    ...
    ValueError: gt.txt has 2 rows with id 2 in frame 1; each (frame, id) must appear once.
    """
    same = (table.frames[1:] == table.frames[:-1]) & (table.ids[1:] == table.ids[:-1])
    if same.any():
        row = int(np.flatnonzero(same)[0])
        frame, identity = table.frames[row], table.ids[row]
        count = int(np.sum((table.frames == frame) & (table.ids == identity)))
        raise ValueError(f"{source} has {count} rows with id {identity} in frame {frame}; "
                         "each (frame, id) must appear once.")


def read_mot(path):
    """Reads a MOTChallenge text file (comma or whitespace separated).

    Args:
        path: the file.

    Returns:
        A `MotTable`.

    Raises:
        ValueError: naming the file and line: a line with fewer than 6
            numbers, a frame below 1 or not whole, an id not whole (-1 is
            "unknown"), a box coordinate or score that is not finite, a
            negative width or height; or a file that is not text.

    Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "gt.txt")
    >>> _ = open(path, "w").write("1,1,10,20,30,40,1,-1,-1,-1\\n")
    >>> read_mot(path).boxes.tolist()
    [[10.0, 20.0, 30.0, 40.0]]
    """
    try:
        text = pathlib.Path(path).read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a MOTChallenge text file (it is not text).") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(value) for value in line.replace(",", " ").split()]
        except ValueError:
            values = []
        if len(values) < 6:
            raise ValueError(f"{path}:{number}: a MOTChallenge line needs at least 6 numbers "
                             f"(frame, id, left, top, width, height); received {line!r}.")
        row = values[:7] + [1.0] * (7 - len(values[:7]))
        problem = _row_problem(*row)
        if problem:
            raise ValueError(f"{path}:{number}: {problem}; received {line!r}.")
        rows.append(row)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return MotTable.from_rows(table[:, 0], table[:, 1], table[:, 2:6], table[:, 6])


def _row_problem(frame, identity, left, top, width, height, score):
    """What is wrong with one MOTChallenge row, or None."""
    if not frame.is_integer() or frame < 1:
        return f"the frame must be a whole number >= 1 (frames count from 1), not {frame:g}"
    if not identity.is_integer():
        return f"the id must be a whole number (-1: unknown), not {identity:g}"
    if not np.isfinite([left, top, width, height, score]).all():
        return "the box and score must be finite numbers"
    if width < 0 or height < 0:
        return f"the width and height must be >= 0, not {width:g} and {height:g}"
    return None


def write_mot(path, table):
    """Writes a `MotTable` as MOTChallenge text (world coordinates -1).

    Args:
        path: the file (its folder is created).
        table: a `MotTable`.

    Returns:
        `path`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{frame},{identity},{box[0]:.2f},{box[1]:.2f},{box[2]:.2f},{box[3]:.2f},"
             f"{score:.4g},-1,-1,-1"
             for frame, identity, box, score in zip(*table)]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def xywh_to_xyxy(boxes):
    """`(left, top, width, height)` to corners `(x1, y1, x2, y2)`."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes):
    """Corners `(x1, y1, x2, y2)` to `(left, top, width, height)`."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)
