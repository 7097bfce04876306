/// A sequence's own random stream (xoshiro256**, seeded through SplitMix64).
///
/// Each sequence carries one, so a seeded request draws the same tokens whatever else shares its
/// batches, and a preempted sequence resumes the stream where it stopped.
public struct SamplingRNG: RandomNumberGenerator, Equatable, Sendable {
    private var s0, s1, s2, s3: UInt64

    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix(); s1 = splitMix(); s2 = splitMix(); s3 = splitMix()
    }

    /// The stream of a request's `sampling_seed` (negative seeds keep their bit pattern), or a
    /// random one when the request has none.
    public init(samplingSeed: Int?) {
        self.init(seed: samplingSeed.map { UInt64(bitPattern: Int64($0)) } ?? UInt64.random(in: .min ... .max))
    }

    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// A uniform draw in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1p-53
    }
}
