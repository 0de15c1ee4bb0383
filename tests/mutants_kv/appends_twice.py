"""KVCache appends every new position twice."""
# symptom: should be the first update's keys followed|differ from a full recomputation|len\(cache\) should be


class KVCache:
    def __init__(self):
        self.keys, self.values = {}, {}

    def update(self, layer, k, v):
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k, k], dim=2)
            v = torch.cat([self.values[layer], v, v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def __len__(self):
        return self.keys[0].size(2) if 0 in self.keys else 0
