extension UnsafeBufferPointer where Element == Float {
    /// The index of the largest element, the first among ties (0 when empty): greedy sampling's
    /// rule, shared by the host sampler and the CPU backend's `argmax`.
    public var firstArgmax: Int {
        var best = 0
        for i in 1..<Swift.max(count, 1) where self[i] > self[best] { best = i }
        return best
    }
}
