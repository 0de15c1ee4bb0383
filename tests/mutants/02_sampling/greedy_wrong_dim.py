"""greedy takes the argmax over dimension 0 instead of the last one"""


def greedy(logits):
    return torch.argmax(logits, dim=0)
