import Foundation
import Tokenization

/// A prompt as sent: token ids (native backend) or text.
public enum Prompt: Sendable, Equatable {
    case text(String)
    case ids([Int])
}

/// One request of a workload, before it is sent.
public struct BenchRequest: Sendable, Equatable {
    public var index: Int
    public var prompt: Prompt
    /// Prompt tokens intended; the server's count replaces it when the answer carries one.
    public var inputLength: Int
    public var outputLength: Int
    /// nil: the base model.
    public var adapter: String?
}

/// Makes prompts of a given token length without a dataset.
public enum PromptSource: Sendable {
    /// Random ids in `0..<vocabSize`, skipping `excluded` (special tokens).
    case ids(vocabSize: Int, excluded: Set<Int>)
    /// Random ids decoded to text by a tokenizer (SGLang's `random-ids` prompts); see `decoded(by:)`.
    case decoded(Tokenizer, excluded: Set<Int>)
    /// Common English words, about one token each for Llama 3 / Qwen vocabularies; used when no
    /// tokenizer is given. The server's prompt count is what the report uses.
    case words

    /// The special tokens of a tokenizer, which random prompts leave out.
    public static func specialIds(of t: Tokenizer) -> Set<Int> { Set((0..<t.vocabSize).filter { t.isSpecial($0) }) }

    public static func decoded(by t: Tokenizer) -> PromptSource { .decoded(t, excluded: specialIds(of: t)) }

    /// A prompt of about `length` tokens.
    func prompt(length: Int, rng: inout SeededGenerator) -> Prompt {
        switch self {
        case .ids(let vocab, let excluded):
            return .ids(Self.randomIds(length, vocab: vocab, excluded: excluded, rng: &rng))
        case .decoded(let t, let excluded):
            return .text(t.decode(Self.randomIds(length, vocab: t.vocabSize, excluded: excluded, rng: &rng)))
        case .words:
            return .text((0..<length).map { _ in Self.wordList[rng.nextInt(in: 0..<Self.wordList.count)] }.joined(separator: " "))
        }
    }

    static func randomIds(_ n: Int, vocab: Int, excluded: Set<Int>, rng: inout SeededGenerator) -> [Int] {
        precondition(excluded.count < vocab, "every token id is excluded")
        return (0..<n).map { _ in
            var id: Int
            repeat { id = rng.nextInt(in: 0..<vocab) } while excluded.contains(id)
            return id
        }
    }

    static let wordList: [String] = """
    the of and to in is was for on that with as at by from it his her they this had not are but be have \
    one all were we when there can an which their said if do will each about how up out them then she \
    many some so these would other into has more two like him see time could no make than first been its \
    who now people my made over did down only way find use may water long little very after words called \
    just where most know get through back much go good new write our used me man too any day same right \
    look think also around another came come work three word must because does part even place well
    """.split(separator: " ").map(String.init)
}

/// The requests of a benchmark, made once from the seed so that every rate of a sweep, and a run
/// with and without adapters, sends the same prompts and lengths.
public enum Workload {
    public static func make(config: BenchmarkConfig, source: PromptSource) -> [BenchRequest] {
        var rng = SeededGenerator(seed: config.seed)
        let inputs = (0..<config.numPrompts).map { _ in config.inputLengths.sample(&rng) }
        let outputs = (0..<config.numPrompts).map { _ in config.outputLengths.sample(&rng) }
        var adapterRng = SeededGenerator(seed: config.seed &+ 0x5EED)
        let picks = config.adapters.isEmpty
            ? nil : config.distribution.assign(count: config.numPrompts, among: config.adapters.count, rng: &adapterRng)
        return (0..<config.numPrompts).map { i in
            BenchRequest(index: i, prompt: source.prompt(length: inputs[i], rng: &rng), inputLength: inputs[i],
                         outputLength: outputs[i], adapter: picks.map { config.adapters[$0[i]] })
        }
    }

    /// Send offsets of one run; the arrival stream has its own seed so that every rate draws the
    /// same unit intervals.
    public static func offsets(config: BenchmarkConfig, arrival: ArrivalProcess) -> [Double] {
        var rng = SeededGenerator(seed: config.seed &+ 0xA221)
        return arrival.offsets(count: config.numPrompts, rng: &rng)
    }

    /// Adapter names `pattern` with `{i}` replaced by 0..<n (`--num-adapters`, `--adapter-pattern`).
    public static func adapterNames(count: Int, pattern: String) throws -> [String] {
        guard pattern.contains("{i}") else { throw BenchError.invalidOption("--adapter-pattern must contain {i}, as in 'adapter-{i}'") }
        return (0..<count).map { pattern.replacingOccurrences(of: "{i}", with: String($0)) }
    }
}
