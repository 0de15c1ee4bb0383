"""left_pad numbers positions from the padded start, so a shorter prompt's tokens get the wrong positions."""
# symptom: the padding takes no position


def left_pad(rows, pad_id=0):
    longest = max(len(row) for row in rows)
    ids = torch.tensor([[pad_id] * (longest - len(row)) + list(row) for row in rows])
    key_mask = torch.tensor([[False] * (longest - len(row)) + [True] * len(row) for row in rows])
    positions = torch.arange(longest).expand(len(rows), longest)
    return ids, key_mask, positions
