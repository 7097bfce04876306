/// The scheduler's limits, from the server's flags.
public struct SchedulerConfig: Sendable, Equatable {
    /// KV blocks in the cache and tokens per block.
    public var numBlocks: Int
    public var blockSize: Int
    /// The context length: a sequence stops (`length`) when prompt + output reach it.
    public var maxModelLength: Int
    /// `--max-running-requests`: sequences holding KV at once (each decodes every step).
    public var maxRunningRequests: Int = 256
    /// `--max-loras-per-batch`: distinct adapters in one batch, the base model counting as one.
    public var maxLorasPerBatch: Int = 8
    /// `--chunked-prefill-size`: prefill tokens per step, over all sequences; a longer prompt is
    /// prefilled over several steps.
    public var chunkedPrefillSize: Int = 8192
    /// Tokens per step (decode + prefill), the model's workspace; `nil`: `chunkedPrefillSize +
    /// maxRunningRequests`. Decode tokens are reserved first, so it must be at least
    /// `maxRunningRequests`.
    public var maxBatchTokens: Int? = nil
    /// A waiting sequence kept out by the adapter limit for more than this many steps stops the
    /// admission of any other adapter's sequences until it is admitted (see `Scheduler`).
    public var maxSkipSteps: Int = 64
    /// The model's EOS ids; sampling one finishes a sequence unless `ignore_eos`.
    public var eosTokenIds: [Int] = []
    /// SGLang's radix cache; off: `--disable-radix-cache`.
    public var enablePrefixCache: Bool = true

    public init(numBlocks: Int, blockSize: Int = 16, maxModelLength: Int) {
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        self.maxModelLength = maxModelLength
    }

    /// `maxBatchTokens` with its default.
    public var stepTokenLimit: Int { maxBatchTokens ?? (chunkedPrefillSize + maxRunningRequests) }
}
