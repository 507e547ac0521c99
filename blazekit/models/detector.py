def build_detector(*a, **k):
    raise NotImplementedError
