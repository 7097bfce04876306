/// Element types of tensors in model files and on devices.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16: 2
        }
    }
}

/// Conversions between half-precision formats and `Float`, bit-exact with PyTorch's
/// (round to nearest even when narrowing).
public enum HalfConversion {
    @inlinable
    public static func bf16ToFloat(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    @inlinable
    public static func floatToBF16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return 0x7FC0 }
        let rounding = ((bits >> 16) & 1) &+ 0x7FFF
        return UInt16((bits &+ rounding) >> 16)
    }

    @inlinable
    public static func f16ToFloat(_ bits: UInt16) -> Float {
        #if arch(x86_64) || arch(arm64)
        return Float(Float16(bitPattern: bits))
        #else
        fatalError("Float16 is unavailable on this architecture")
        #endif
    }

    @inlinable
    public static func floatToF16(_ value: Float) -> UInt16 {
        Float16(value).bitPattern
    }

    /// Converts `count` elements of `dtype` at `source` into `destination` as `Float`.
    public static func toFloat(
        _ source: UnsafeRawPointer, dtype: DType, count: Int, into destination: UnsafeMutablePointer<Float>
    ) {
        switch dtype {
        case .f32:
            destination.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .bf16:
            let s = source.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { destination[i] = bf16ToFloat(s[i]) }
        case .f16:
            let s = source.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { destination[i] = f16ToFloat(s[i]) }
        case .i32:
            let s = source.assumingMemoryBound(to: Int32.self)
            for i in 0..<count { destination[i] = Float(s[i]) }
        }
    }
}
