import Foundation
import Testing
@testable import Engine

private func params(_ change: (inout SamplingParams) -> Void = { _ in }) -> SamplingParams {
    var p = SamplingParams()
    change(&p)
    return p
}

/// Draws `count` tokens from the same logits with one seeded stream; returns each token's frequency.
private func frequencies(_ logits: [Float], _ p: SamplingParams, count: Int? = nil, seed: UInt64 = 7) -> [Double] {
    // Fewer draws on large vocabularies: debug builds scan them slowly.
    let count = count ?? (logits.count > 100 ? 4000 : 20000)
    let sampler = Sampler(vocabSize: logits.count, eosTokenIds: [])
    var rng = SamplingRNG(seed: seed)
    var hits = [Int](repeating: 0, count: logits.count)
    for _ in 0..<count {
        hits[sampler.sample(logits: logits, params: p, promptIds: [], outputIds: [], rng: &rng).token] += 1
    }
    return hits.map { Double($0) / Double(count) }
}

private func expectClose(_ actual: [Double], _ expected: [Double], tolerance: Double = 0.015,
                         sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, sourceLocation: sourceLocation)
    for (a, e) in zip(actual, expected) {
        #expect(abs(a - e) <= tolerance, "got \(actual), expected \(expected)", sourceLocation: sourceLocation)
        if e == 0 { #expect(a == 0, "a filtered token was drawn: \(actual)", sourceLocation: sourceLocation) }
    }
}

private func logits(_ probs: [Double]) -> [Float] { probs.map { Float(log($0)) } }

@Test func greedyTakesTheFirstMaximum() {
    let sampler = Sampler(vocabSize: 4, eosTokenIds: [])
    var rng = SamplingRNG(seed: 1)
    let row: [Float] = [1, 3, 3, 2]
    #expect(sampler.sample(logits: row, params: params { $0.temperature = 0 }, promptIds: [], outputIds: [], rng: &rng).token == 1)
    #expect(sampler.sample(logits: row, params: params { $0.topK = 1 }, promptIds: [], outputIds: [], rng: &rng).token == 1)
    // Greedy draws nothing from the stream.
    #expect(rng == SamplingRNG(seed: 1))
}

@Test func seededSamplingIsReproducible() {
    let sampler = Sampler(vocabSize: 50, eosTokenIds: [])
    let row = (0..<50).map { Float(sin(Double($0))) }
    func run(_ seed: Int) -> [Int] {
        var sequence = Sequence(id: 0, promptIds: [1], params: params { $0.samplingSeed = seed })
        return (0..<64).map { _ in
            row.withUnsafeBufferPointer { sampler.sample(logits: $0, for: &sequence).token }
        }
    }
    #expect(run(1234) == run(1234))
    #expect(run(1234) != run(1235))
    // Unseeded sequences draw their own random seeds.
    var a = Sequence(id: 0, promptIds: [1]), b = Sequence(id: 1, promptIds: [1])
    #expect(a.rng.next() != b.rng.next())
}

@Test func temperatureSharpensAndFlattens() {
    let probs = [0.5, 0.3, 0.2]
    expectClose(frequencies(logits(probs), params()), probs)
    let t2 = probs.map { pow($0, 0.5) }, z2 = t2.reduce(0, +)
    expectClose(frequencies(logits(probs), params { $0.temperature = 2 }), t2.map { $0 / z2 })
    let t05 = probs.map { pow($0, 2) }, z05 = t05.reduce(0, +)
    expectClose(frequencies(logits(probs), params { $0.temperature = 0.5 }), t05.map { $0 / z05 })
}

@Test func topKKeepsTheKMostLikely() {
    expectClose(frequencies(logits([0.1, 0.4, 0.2, 0.3]), params { $0.topK = 2 }), [0, 4.0 / 7, 0, 3.0 / 7])
}

@Test func topPKeepsTheSmallestNucleus() {
    let probs = [0.5, 0.3, 0.15, 0.05]
    expectClose(frequencies(logits(probs), params { $0.topP = 0.7 }), [0.625, 0.375, 0, 0])
    expectClose(frequencies(logits(probs), params { $0.topP = 0.85 }), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0])
    expectClose(frequencies(logits(probs), params { $0.topP = 0.2 }), [1, 0, 0, 0])
}

@Test func minPDropsTokensBelowAFractionOfTheTop() {
    let probs = [0.5, 0.3, 0.15, 0.05]
    expectClose(frequencies(logits(probs), params { $0.minP = 0.2 }), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0])
    expectClose(frequencies(logits(probs), params { $0.minP = 0.61 }), [1, 0, 0, 0])
}

@Test func topPSeesTheTopKRenormalisedMass() {
    // After top-k = 3: [0.444, 0.333, 0.222]; top-p 0.75 stops after two tokens (0.777 >= 0.75).
    // Top-p over the unrenormalised mass (0.4 + 0.3 = 0.7 < 0.75) would keep the third.
    expectClose(frequencies(logits([0.4, 0.3, 0.2, 0.1]), params { $0.topK = 3; $0.topP = 0.75 }), [4.0 / 7, 3.0 / 7, 0, 0])
}

@Test func filtersOnALargeVocabulary() {
    // One likely token and a tail of 999 at 1/100 of it: below the first candidate threshold
    // (1/64), so top-k and top-p must widen their search to the tail.
    var row = [Float](repeating: Float(log(0.01)), count: 1000)
    row[0] = 0
    var expected = [Double](repeating: 0, count: 1000)
    expected[0] = 1 / 1.02
    expected[1] = 0.01 / 1.02
    expected[2] = 0.01 / 1.02
    // Top-3: the tail's ties go to the lowest ids.
    expectClose(frequencies(row, params { $0.topK = 3 }), expected)

    // Top-p 0.5 of a total mass 10.99: token 0, then tail tokens while the mass before them is
    // below 5.495, i.e. tokens 1...450.
    let nucleus = frequencies(row, params { $0.topP = 0.5 })
    #expect(nucleus[451...].allSatisfy { $0 == 0 })
    #expect(abs(nucleus[0] - 1 / 5.5) < 0.015)
    #expect(nucleus[1...450].filter { $0 > 0 }.count > 400)

    // Min-p above the tail's ratio keeps token 0 alone; below it, with top-k, the first five.
    #expect(frequencies(row, params { $0.minP = 0.02 }, count: 500)[0] == 1)
    let five = frequencies(row, params { $0.minP = 0.005; $0.topK = 5 })
    #expect(five[5...].allSatisfy { $0 == 0 } && five[1..<5].allSatisfy { $0 > 0 })

    let flat = [Float](repeating: 0, count: 1000)
    let half = frequencies(flat, params { $0.topP = 0.5 })
    #expect(half[500...].allSatisfy { $0 == 0 })
    #expect(half[..<500].filter { $0 > 0 }.count > 450)
}

@Test func penaltiesMatchHandComputedValues() {
    let sampler = Sampler(vocabSize: 5, eosTokenIds: [])
    let row: [Float] = [2, -1, 0.5, 3, -2]
    let p = params { $0.repetitionPenalty = 2; $0.frequencyPenalty = 0.5; $0.presencePenalty = 0.25 }
    row.withUnsafeBufferPointer { sampler.prepare(logits: $0, params: p, promptIds: [0, 1], outputIds: [1, 2, 2]) }
    // Repetition over {0, 1, 2}: 2 → 1, -1 → -2, 0.5 → 0.25. Then output counts {1: 1, 2: 2}:
    // token 1: -2 - 0.5·1 - 0.25 = -2.75; token 2: 0.25 - 0.5·2 - 0.25 = -1.
    #expect(Array(UnsafeBufferPointer(start: sampler.work, count: 5)) == [1, -2.75, -1, 3, -2])
    // Scratch state is reset: the same call gives the same result.
    row.withUnsafeBufferPointer { sampler.prepare(logits: $0, params: p, promptIds: [0, 1], outputIds: [1, 2, 2]) }
    #expect(Array(UnsafeBufferPointer(start: sampler.work, count: 5)) == [1, -2.75, -1, 3, -2])
    // Frequency penalty flips a greedy choice: 3 - 0.5·3 < 2.
    var rng = SamplingRNG(seed: 0)
    let greedy = params { $0.temperature = 0; $0.frequencyPenalty = 0.5 }
    #expect(sampler.sample(logits: row, params: greedy, promptIds: [], outputIds: [3, 3, 3], rng: &rng).token == 0)
}

@Test func minNewTokensMasksStopTokens() {
    let eos = 4
    let sampler = Sampler(vocabSize: 5, eosTokenIds: [eos])
    var rng = SamplingRNG(seed: 0)
    let row: [Float] = [0, 1, 0, 5, 9]
    let p = params { $0.temperature = 0; $0.minNewTokens = 2; $0.stopTokenIds = [3] }
    #expect(sampler.sample(logits: row, params: p, promptIds: [0], outputIds: [], rng: &rng).token == 1)
    #expect(sampler.sample(logits: row, params: p, promptIds: [0], outputIds: [1], rng: &rng).token == 1)
    #expect(sampler.sample(logits: row, params: p, promptIds: [0], outputIds: [1, 1], rng: &rng).token == eos)
    // ignore_eos: EOS stops nothing, so it is not masked; stop_token_ids still are.
    let ignoring = params { $0.temperature = 0; $0.minNewTokens = 2; $0.stopTokenIds = [3]; $0.ignoreEos = true }
    #expect(sampler.sample(logits: row, params: ignoring, promptIds: [0], outputIds: [], rng: &rng).token == eos)
    // Sampling never draws a masked token either.
    let sampled = params { $0.minNewTokens = 5; $0.stopTokenIds = [3] }
    for _ in 0..<500 {
        let t = sampler.sample(logits: row, params: sampled, promptIds: [], outputIds: [], rng: &rng).token
        #expect(t != 3 && t != eos)
    }
}

@Test func logprobsAreTheRawLogSoftmax() {
    let row: [Float] = [1, 3, 3, 2, -1]
    let sampler = Sampler(vocabSize: 5, eosTokenIds: [])
    var rng = SamplingRNG(seed: 3)
    let p = params { $0.temperature = 0.7; $0.repetitionPenalty = 1.5 }
    let result = sampler.sample(logits: row, params: p, promptIds: [1], outputIds: [], rng: &rng, returnLogprob: true, topLogprobsNum: 5)
    let logZ = log(row.map { exp(Double($0)) }.reduce(0, +))
    #expect(abs(Double(result.logprob!) - (Double(row[result.token]) - logZ)) < 1e-5)
    #expect(result.topLogprobs.map(\.token) == [1, 2, 3, 0, 4])
    let total = result.topLogprobs.map { exp(Double($0.logprob)) }.reduce(0, +)
    #expect(abs(total - 1) < 1e-5)
    for entry in result.topLogprobs { #expect(abs(Double(entry.logprob) - (Double(row[entry.token]) - logZ)) < 1e-5) }

    let two = sampler.sample(logits: row, params: p, promptIds: [], outputIds: [], rng: &rng, topLogprobsNum: 2)
    #expect(two.topLogprobs.map(\.token) == [1, 2])
    #expect(two.logprob != nil)
    let none = sampler.sample(logits: row, params: p, promptIds: [], outputIds: [], rng: &rng)
    #expect(none.logprob == nil && none.topLogprobs.isEmpty)
}

@Test func everythingMaskedFallsBackToTheRawArgmax() {
    let sampler = Sampler(vocabSize: 2, eosTokenIds: [0, 1])
    var rng = SamplingRNG(seed: 0)
    let p = params { $0.minNewTokens = 3 }
    #expect(sampler.sample(logits: [1, 2], params: p, promptIds: [], outputIds: [], rng: &rng).token == 1)
}

/// Rows the engine may sample on the device (an argmax there, only ids back) are exactly those whose
/// host sample would be the raw argmax; anything that changes the choice or wants logprobs stays on the host.
@Test func plainArgmaxRowsAreThoseTheHostSamplesAsTheRawArgmax() {
    let sampler = Sampler(vocabSize: 8, eosTokenIds: [2])
    func sequence(_ change: (inout SamplingParams) -> Void) -> Sequence {
        Sequence(id: 1, promptIds: [1, 3], params: params { $0.temperature = 0; change(&$0) })
    }
    #expect(sampler.isPlainArgmax(sequence { _ in }, returnLogprob: false, topLogprobsNum: 0))
    #expect(sampler.isPlainArgmax(sequence { $0.temperature = 0.8; $0.topK = 1 }, returnLogprob: false, topLogprobsNum: 0))
    #expect(!sampler.isPlainArgmax(sequence { $0.temperature = 0.8 }, returnLogprob: false, topLogprobsNum: 0))
    #expect(!sampler.isPlainArgmax(sequence { _ in }, returnLogprob: true, topLogprobsNum: 0))
    #expect(!sampler.isPlainArgmax(sequence { _ in }, returnLogprob: false, topLogprobsNum: 3))
    #expect(!sampler.isPlainArgmax(sequence { $0.repetitionPenalty = 1.1 }, returnLogprob: false, topLogprobsNum: 0))
    #expect(!sampler.isPlainArgmax(sequence { $0.frequencyPenalty = 0.5 }, returnLogprob: false, topLogprobsNum: 0))
    #expect(!sampler.isPlainArgmax(sequence { $0.presencePenalty = 0.5 }, returnLogprob: false, topLogprobsNum: 0))
    // Before min_new_tokens EOS is masked, unless ignored.
    #expect(!sampler.isPlainArgmax(sequence { $0.minNewTokens = 4 }, returnLogprob: false, topLogprobsNum: 0))
    #expect(sampler.isPlainArgmax(sequence { $0.minNewTokens = 4; $0.ignoreEos = true }, returnLogprob: false, topLogprobsNum: 0))
    #expect(!sampler.isPlainArgmax(sequence { $0.minNewTokens = 4; $0.ignoreEos = true; $0.stopTokenIds = [5] }, returnLogprob: false, topLogprobsNum: 0))
}
