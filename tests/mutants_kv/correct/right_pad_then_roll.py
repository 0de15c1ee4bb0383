"""Correct: left_pad built by padding on the right and rolling each row right by its padding; positions by arange."""


def left_pad(rows, pad_id=0):
    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    key_mask = torch.zeros(len(rows), longest, dtype=torch.bool)
    positions = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        shift = longest - len(row)
        ids[i, : len(row)] = torch.tensor(row)
        key_mask[i, : len(row)] = True
        positions[i, : len(row)] = torch.arange(len(row))
        ids[i], key_mask[i], positions[i] = ids[i].roll(shift), key_mask[i].roll(shift), positions[i].roll(shift)
    return ids, key_mask, positions
