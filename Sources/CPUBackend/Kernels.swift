/// SIMD inner loops of the CPU backend.
enum Kernels {
    /// `Σ a[k]·b[k]` for `k < n`.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = SIMD4<Float>(), acc1 = SIMD4<Float>()
        var k = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while k + 8 <= n {
            acc0 += ra.loadUnaligned(fromByteOffset: k * 4, as: SIMD4<Float>.self) * rb.loadUnaligned(fromByteOffset: k * 4, as: SIMD4<Float>.self)
            acc1 += ra.loadUnaligned(fromByteOffset: k * 4 + 16, as: SIMD4<Float>.self) * rb.loadUnaligned(fromByteOffset: k * 4 + 16, as: SIMD4<Float>.self)
            k += 8
        }
        var s = (acc0 + acc1).sum()
        while k < n { s += a[k] * b[k]; k += 1 }
        return s
    }

    /// `y[j] += alpha · x[j]` for `j < n`.
    @inline(__always)
    static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var k = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        let va = SIMD4<Float>(repeating: alpha)
        while k + 4 <= n {
            let v = ry.loadUnaligned(fromByteOffset: k * 4, as: SIMD4<Float>.self) + va * rx.loadUnaligned(fromByteOffset: k * 4, as: SIMD4<Float>.self)
            ry.storeBytes(of: v, toByteOffset: k * 4, as: SIMD4<Float>.self)
            k += 4
        }
        while k < n { y[k] += alpha * x[k]; k += 1 }
    }

    /// `out[i][o] = Σ_k x[i][k]·w[o][k]` for rows `i < rows`, outputs `o` in `outputs`, computed in 4×4
    /// register tiles so each loaded vector is used four times.
    static func gemmNT(
        x: UnsafePointer<Float>, rows: Int, w: UnsafePointer<Float>, outputs: Range<Int>, k: Int, wStride: Int? = nil,
        out: UnsafeMutablePointer<Float>, outStride: Int
    ) {
        let ws = wStride ?? k
        let kv = k & ~3
        var o = outputs.lowerBound
        while o < outputs.upperBound {
            let oc = min(4, outputs.upperBound - o)
            var i = 0
            while i < rows {
                let ic = min(4, rows - i)
                if oc == 4 && ic == 4 {
                    tile4x4(x: x + i * k, w: w + o * ws, k: k, wStride: ws, kv: kv, out: out + i * outStride + o, outStride: outStride)
                } else {
                    for ii in 0..<ic {
                        for oo in 0..<oc {
                            out[(i + ii) * outStride + o + oo] = dot(x + (i + ii) * k, w + (o + oo) * ws, k)
                        }
                    }
                }
                i += 4
            }
            o += 4
        }
    }

    @inline(__always)
    private static func tile4x4(
        x: UnsafePointer<Float>, w: UnsafePointer<Float>, k: Int, wStride: Int, kv: Int,
        out: UnsafeMutablePointer<Float>, outStride: Int
    ) {
        typealias V = SIMD4<Float>
        let x0 = UnsafeRawPointer(x), x1 = UnsafeRawPointer(x + k), x2 = UnsafeRawPointer(x + 2 * k), x3 = UnsafeRawPointer(x + 3 * k)
        let w0 = UnsafeRawPointer(w), w1 = UnsafeRawPointer(w + wStride), w2 = UnsafeRawPointer(w + 2 * wStride), w3 = UnsafeRawPointer(w + 3 * wStride)
        var a00 = V(), a01 = V(), a02 = V(), a03 = V()
        var a10 = V(), a11 = V(), a12 = V(), a13 = V()
        var a20 = V(), a21 = V(), a22 = V(), a23 = V()
        var a30 = V(), a31 = V(), a32 = V(), a33 = V()
        var b = 0
        while b < kv * 4 {
            let vw0 = w0.loadUnaligned(fromByteOffset: b, as: V.self), vw1 = w1.loadUnaligned(fromByteOffset: b, as: V.self)
            let vw2 = w2.loadUnaligned(fromByteOffset: b, as: V.self), vw3 = w3.loadUnaligned(fromByteOffset: b, as: V.self)
            var vx = x0.loadUnaligned(fromByteOffset: b, as: V.self)
            a00 += vx * vw0; a01 += vx * vw1; a02 += vx * vw2; a03 += vx * vw3
            vx = x1.loadUnaligned(fromByteOffset: b, as: V.self)
            a10 += vx * vw0; a11 += vx * vw1; a12 += vx * vw2; a13 += vx * vw3
            vx = x2.loadUnaligned(fromByteOffset: b, as: V.self)
            a20 += vx * vw0; a21 += vx * vw1; a22 += vx * vw2; a23 += vx * vw3
            vx = x3.loadUnaligned(fromByteOffset: b, as: V.self)
            a30 += vx * vw0; a31 += vx * vw1; a32 += vx * vw2; a33 += vx * vw3
            b += 16
        }
        @inline(__always) func tail(_ xi: UnsafePointer<Float>, _ wo: UnsafePointer<Float>) -> Float {
            var t: Float = 0
            var kk = kv
            while kk < k { t += xi[kk] * wo[kk]; kk += 1 }
            return t
        }
        out[0 * outStride + 0] = a00.sum() + tail(x, w)
        out[0 * outStride + 1] = a01.sum() + tail(x, w + 1 * wStride)
        out[0 * outStride + 2] = a02.sum() + tail(x, w + 2 * wStride)
        out[0 * outStride + 3] = a03.sum() + tail(x, w + 3 * wStride)
        out[1 * outStride + 0] = a10.sum() + tail(x + 1 * k, w)
        out[1 * outStride + 1] = a11.sum() + tail(x + 1 * k, w + 1 * wStride)
        out[1 * outStride + 2] = a12.sum() + tail(x + 1 * k, w + 2 * wStride)
        out[1 * outStride + 3] = a13.sum() + tail(x + 1 * k, w + 3 * wStride)
        out[2 * outStride + 0] = a20.sum() + tail(x + 2 * k, w)
        out[2 * outStride + 1] = a21.sum() + tail(x + 2 * k, w + 1 * wStride)
        out[2 * outStride + 2] = a22.sum() + tail(x + 2 * k, w + 2 * wStride)
        out[2 * outStride + 3] = a23.sum() + tail(x + 2 * k, w + 3 * wStride)
        out[3 * outStride + 0] = a30.sum() + tail(x + 3 * k, w)
        out[3 * outStride + 1] = a31.sum() + tail(x + 3 * k, w + 1 * wStride)
        out[3 * outStride + 2] = a32.sum() + tail(x + 3 * k, w + 2 * wStride)
        out[3 * outStride + 3] = a33.sum() + tail(x + 3 * k, w + 3 * wStride)
    }
}
