import Foundation

extension Sampler {
    /// Temperature, top-k, top-p and min-p over `work` (processed logits), then one draw.
    ///
    /// Sorting a whole vocabulary each step would cost milliseconds per sequence, so only the
    /// candidates that can survive are sorted: tokens whose unnormalised probability `p` (the top
    /// token has `p = 1`) reaches a threshold `t`. `t` starts at 1/64 and shrinks until the kept
    /// set provably lies inside the candidates: `k` of them for top-k (then they are the top k),
    /// their mass reaching `top_p` of the total for top-p alone, or `t <= min_p` (every token
    /// min-p keeps is a candidate) unless top-k and top-p are both on, where top-p needs the exact
    /// top-k mass. Peaked distributions stop after one scan; a flat one sorts everything.
    func draw(maxLogit: Float, params: SamplingParams, rng: inout SamplingRNG) -> Int {
        let n = vocabSize
        let invT = 1 / params.temperature
        var total: Double = 0
        for i in 0..<n {
            let p = expf((work[i] - maxLogit) * invT)
            work[i] = p
            total += Double(p)
        }
        let k = params.topK >= 1 && params.topK < n ? params.topK : n
        let topKActive = k < n
        let topPActive = params.topP < 1
        let floor = params.minP

        if !topKActive && !topPActive {
            var mass: Double = 0
            for i in 0..<n where work[i] > 0 && work[i] >= floor { mass += Double(work[i]) }
            var u = rng.nextUnit() * mass
            var last = 0
            for i in 0..<n where work[i] > 0 && work[i] >= floor {
                u -= Double(work[i])
                last = i
                if u < 0 { return i }
            }
            return last
        }

        var t: Float = 1.0 / 64
        var count = 0
        while true {
            count = 0
            var mass: Double = 0
            for i in 0..<n where work[i] > 0 && work[i] >= t {
                candidates[count] = Int32(i)
                count += 1
                mass += Double(work[i])
            }
            if t == 0 { break }
            if topKActive && count >= k { break }
            if !topKActive && mass >= Double(params.topP) * total { break }
            if t <= floor && !(topKActive && topPActive) { break }
            t /= 64
            if t < 1e-30 { t = 0 }
        }

        let w = work
        var sorted = UnsafeMutableBufferPointer(start: candidates, count: count)
        sorted.sort { a, b in
            let pa = w[Int(a)], pb = w[Int(b)]
            return pa != pb ? pa > pb : a < b
        }
        func p(_ j: Int) -> Double { Double(work[Int(candidates[j])]) }

        var keep = topKActive ? min(k, count) : count
        if topPActive {
            var topKMass = total
            if topKActive {
                topKMass = 0
                for j in 0..<keep { topKMass += p(j) }
            }
            let target = Double(params.topP) * topKMass
            var cumulative: Double = 0
            var j = 0
            while j < keep && cumulative < target {
                cumulative += p(j)
                j += 1
            }
            keep = max(j, 1)
        }
        if floor > 0 {
            var j = 0
            while j < keep && p(j) >= Double(floor) { j += 1 }
            keep = max(j, 1)
        }

        var mass: Double = 0
        for j in 0..<keep { mass += p(j) }
        var u = rng.nextUnit() * mass
        for j in 0..<keep {
            u -= p(j)
            if u < 0 { return Int(candidates[j]) }
        }
        return Int(candidates[keep - 1])
    }

    /// The log-softmax of `logits` at `token`, and the `topN` most likely tokens with theirs
    /// (most likely first; on equal logits the lower id first).
    public static func logprobs(logits: UnsafeBufferPointer<Float>, token: Int, topN: Int) -> (Float, [TokenLogprob]) {
        var m = -Float.infinity
        for x in logits where x > m { m = x }
        guard m > -.infinity else { return (-.infinity, []) }
        var sum: Double = 0
        for x in logits { sum += Double(expf(x - m)) }
        let logZ = Double(m) + log(sum)
        let chosen = Float(Double(logits[token]) - logZ)

        let k = min(max(topN, 0), logits.count)
        guard k > 0 else { return (chosen, []) }
        var ids: [Int] = []
        var values: [Float] = []
        ids.reserveCapacity(k + 1)
        values.reserveCapacity(k + 1)
        for (i, x) in logits.enumerated() {
            if x.isNaN || (ids.count == k && !(x > values[k - 1])) { continue }
            var at = values.count
            while at > 0 && values[at - 1] < x { at -= 1 }
            ids.insert(i, at: at)
            values.insert(x, at: at)
            if ids.count > k {
                ids.removeLast()
                values.removeLast()
            }
        }
        return (chosen, zip(ids, values).map { TokenLogprob(token: $0, logprob: Float(Double($1) - logZ)) })
    }
}
