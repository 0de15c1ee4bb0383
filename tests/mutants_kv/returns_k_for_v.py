"""KVCache returns the keys in place of the values."""
# symptom: it returned the keys instead|returned the keys as the values|differ from a full


class KVCache:
    def __init__(self):
        self.keys, self.values = {}, {}

    def update(self, layer, k, v):
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, k

    def __len__(self):
        return self.keys[0].size(2) if 0 in self.keys else 0
