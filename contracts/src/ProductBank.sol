// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IMultiTokenPushPull, Reward} from "./interfaces/IMultiTokenPushPull.sol";
import {IProductBank} from "./interfaces/IProductBank.sol";

/// @title ProductBank
/// @notice Holds one product's reward funds, caps campaign budgets, and forwards batches
///         signed (EIP-712) by a DISTRIBUTOR to the global MultiTokenPushPull.
/// @dev Roles: DEFAULT_ADMIN_ROLE is "the owner" (withdraw, pause, role admin);
///      MANAGER_ROLE allocates and deactivates campaign budgets; DISTRIBUTOR_ROLE holders
///      sign batches, which anyone may submit before their deadline, once per nonce.
contract ProductBank is IProductBank, AccessControl, Pausable, ReentrancyGuardTransient, EIP712 {
    using SafeERC20 for IERC20;

    bytes32 public constant MANAGER_ROLE = keccak256("MANAGER_ROLE");
    bytes32 public constant DISTRIBUTOR_ROLE = keccak256("DISTRIBUTOR_ROLE");
    bytes32 public constant REWARD_TYPEHASH = keccak256("Reward(address user,uint256 amount)");
    bytes32 public constant PUSH_REWARDS_TYPEHASH = keccak256(
        "PushRewards(bytes32 campaignId,address token,Reward[] rewards,bytes32 nonce,uint256 deadline)"
        "Reward(address user,uint256 amount)"
    );

    enum Status {
        None,
        Active,
        Deactivated
    }

    /// @dev One slot per (campaign, token); the only campaign slot a push touches.
    struct Budget {
        uint128 remaining; // meaningful when capped
        bool capped;
        Status status;
    }

    /// @notice The product this bank belongs to.
    bytes32 public immutable productId;
    /// @notice The global claim contract rewards are forwarded to.
    IMultiTokenPushPull public immutable pushPull;

    mapping(bytes32 campaignId => address token) private _campaignToken;
    mapping(bytes32 campaignId => mapping(address token => Budget)) private _budgets;
    mapping(address token => uint256) private _allocated;
    mapping(bytes32 nonce => bool) private _usedNonces;

    /// @param productId_ The product's id (bytes32).
    /// @param pushPull_ The MultiTokenPushPull this bank pushes to (must authorize this bank).
    /// @param owner_ Receives DEFAULT_ADMIN_ROLE and MANAGER_ROLE.
    constructor(bytes32 productId_, address pushPull_, address owner_) EIP712("Frak.ProductBank", "1") {
        if (pushPull_ == address(0) || owner_ == address(0)) revert ZeroAddress();
        productId = productId_;
        pushPull = IMultiTokenPushPull(pushPull_);
        _grantRole(DEFAULT_ADMIN_ROLE, owner_);
        _grantRole(MANAGER_ROLE, owner_);
    }

    // ------------------------------------------------------------------ funds

    /// @notice Deposits `amount` of `token` from the caller (needs an allowance). Anyone.
    /// @dev Credits what actually arrived (balance delta), so fee-on-transfer tokens are
    ///      accounted correctly; the event carries the received amount.
    function deposit(address token, uint256 amount) external nonReentrant {
        if (token == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        emit FundsDeposited(token, msg.sender, received);
    }

    /// @notice Sends `amount` of `token` to the owner (caller). Only unallocated funds.
    function withdraw(address token, uint256 amount) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (token == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        uint256 available = getAvailableBalance(token);
        if (amount > available) revert InsufficientAvailableBalance(available, amount);
        IERC20(token).safeTransfer(msg.sender, amount);
        emit FundsWithdrawn(token, msg.sender, amount);
    }

    /// @notice Balance of `token` not promised to capped campaigns (withdrawable, and
    ///         what unlimited campaigns draw from).
    function getAvailableBalance(address token) public view returns (uint256) {
        uint256 balance = IERC20(token).balanceOf(address(this));
        uint256 allocated = _allocated[token];
        return balance > allocated ? balance - allocated : 0;
    }

    /// @notice Sum of the remaining budgets of active capped campaigns in `token`.
    function getAllocatedBalance(address token) external view returns (uint256) {
        return _allocated[token];
    }

    // -------------------------------------------------------------- campaigns

    /// @notice Activates `campaignId` for `token`, or resets its remaining budget.
    /// @param budget The new remaining budget; 0 = unlimited (draws from unallocated funds).
    ///        A cap must be covered by unallocated funds (the previous cap is released first).
    /// @dev A campaign is bound to the first token it is allocated in; deactivation is final.
    function allocateCampaignBudget(bytes32 campaignId, address token, uint256 budget)
        external
        onlyRole(MANAGER_ROLE)
    {
        if (token == address(0)) revert ZeroAddress();
        if (budget > type(uint128).max) revert BudgetTooLarge();
        address bound = _campaignToken[campaignId];
        if (bound == address(0)) _campaignToken[campaignId] = token;
        else if (bound != token) revert CampaignTokenMismatch(campaignId, token);

        Budget storage b = _budgets[campaignId][token];
        if (b.status == Status.Deactivated) revert CampaignNotActive(campaignId);
        uint256 allocated = _allocated[token];
        if (b.capped) allocated -= b.remaining;
        if (budget != 0) {
            uint256 balance = IERC20(token).balanceOf(address(this));
            uint256 available = balance > allocated ? balance - allocated : 0;
            if (budget > available) revert InsufficientAvailableBalance(available, budget);
            allocated += budget;
        }
        _allocated[token] = allocated;
        // casting to 'uint128' is safe because budget <= type(uint128).max was checked above
        // forge-lint: disable-next-line(unsafe-typecast)
        _budgets[campaignId][token] = Budget({remaining: uint128(budget), capped: budget != 0, status: Status.Active});
        emit CampaignBudgetAllocated(campaignId, token, budget);
    }

    /// @notice Stops `campaignId` for good and releases its remaining budget.
    function deactivateCampaign(bytes32 campaignId) external onlyRole(MANAGER_ROLE) {
        address token = _campaignToken[campaignId];
        Budget storage b = _budgets[campaignId][token];
        if (b.status != Status.Active) revert CampaignNotActive(campaignId);
        if (b.capped) _allocated[token] -= b.remaining;
        _budgets[campaignId][token] = Budget({remaining: 0, capped: false, status: Status.Deactivated});
        emit CampaignDeactivated(campaignId);
    }

    /// @notice Remaining budget of a capped campaign in `token` (0 if unlimited, unknown or inactive).
    function getCampaignBudget(bytes32 campaignId, address token) external view returns (uint256) {
        return _budgets[campaignId][token].remaining;
    }

    /// @notice Whether pushes for `campaignId` are accepted.
    function isCampaignActive(bytes32 campaignId) external view returns (bool) {
        return _budgets[campaignId][_campaignToken[campaignId]].status == Status.Active;
    }

    /// @notice Full campaign state: bound token, active, capped, remaining budget.
    function getCampaign(bytes32 campaignId)
        external
        view
        returns (address token, bool active, bool capped, uint256 remaining)
    {
        token = _campaignToken[campaignId];
        Budget memory b = _budgets[campaignId][token];
        return (token, b.status == Status.Active, b.capped, b.remaining);
    }

    // ------------------------------------------------------------------ pushes

    /// @notice Whether a batch with `nonce` was already pushed through this bank.
    function isNonceUsed(bytes32 nonce) external view returns (bool) {
        return _usedNonces[nonce];
    }

    /// @notice Pays a DISTRIBUTOR-signed batch: checks, spends the budget, transfers the
    ///         total to MultiTokenPushPull and credits every user there. Any sender.
    /// @param signature 65-byte (r, s, v) EIP-712 signature over
    ///        PushRewards(campaignId, token, rewards, nonce, deadline); low-s only.
    function pushRewards(
        bytes32 campaignId,
        address token,
        Reward[] calldata rewards,
        bytes32 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external nonReentrant whenNotPaused {
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp > deadline) revert SignatureExpired(deadline);
        if (_usedNonces[nonce]) revert NonceAlreadyUsed(nonce);
        (bytes32 digest, uint256 total) = _digest(campaignId, token, rewards, nonce, deadline);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err != ECDSA.RecoverError.NoError) revert InvalidSignature();
        if (!hasRole(DISTRIBUTOR_ROLE, signer)) revert UnauthorizedSigner(signer);
        _usedNonces[nonce] = true;

        Budget storage b = _budgets[campaignId][token];
        if (b.status != Status.Active) revert CampaignNotActive(campaignId);
        if (b.capped) {
            uint128 remaining = b.remaining;
            if (total > remaining) revert InsufficientBudget(remaining, total);
            // casting to 'uint128' is safe because total <= remaining
            // forge-lint: disable-next-line(unsafe-typecast)
            b.remaining = remaining - uint128(total);
            _allocated[token] -= total;
        } else {
            uint256 available = getAvailableBalance(token);
            if (total > available) revert InsufficientAvailableBalance(available, total);
        }

        IERC20(token).safeTransfer(address(pushPull), total);
        _forward(token, rewards);
        emit RewardsPushed(campaignId, token, nonce, total, rewards.length);
    }

    /// @notice The EIP-712 digest a DISTRIBUTOR signs for this batch (helper for off-chain checks).
    function hashPushRewards(
        bytes32 campaignId,
        address token,
        Reward[] calldata rewards,
        bytes32 nonce,
        uint256 deadline
    ) external view returns (bytes32 digest) {
        (digest,) = _digest(campaignId, token, rewards, nonce, deadline);
    }

    /// @notice The EIP-712 domain separator of this bank.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice Stops pushes (e.g. after a signer key leak). Owner only.
    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    /// @notice Resumes pushes. Owner only.
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    // ---------------------------------------------------------------- internal

    function _digest(
        bytes32 campaignId,
        address token,
        Reward[] calldata rewards,
        bytes32 nonce,
        uint256 deadline
    ) private view returns (bytes32 digest, uint256 total) {
        bytes32 rewardsHash;
        (rewardsHash, total) = _hashRewards(rewards);
        digest = _hashTypedDataV4(keccak256(abi.encode(PUSH_REWARDS_TYPEHASH, campaignId, token, rewardsHash, nonce, deadline)));
    }

    /// @dev `pushPull.pushRewards(token, rewards)`, encoded with one calldatacopy of the
    ///      (already validated) array instead of an element-by-element re-encoding.
    function _forward(address token, Reward[] calldata rewards) private {
        address target = address(pushPull);
        bytes4 selector = IMultiTokenPushPull.pushRewards.selector;
        assembly ("memory-safe") {
            let m := mload(0x40)
            let size := shl(6, rewards.length)
            mstore(m, selector)
            mstore(add(m, 0x04), token)
            mstore(add(m, 0x24), 0x40)
            mstore(add(m, 0x44), rewards.length)
            calldatacopy(add(m, 0x64), rewards.offset, size)
            if iszero(call(gas(), target, 0, m, add(0x64, size), 0, 0)) {
                returndatacopy(m, 0, returndatasize())
                revert(m, returndatasize())
            }
        }
    }

    /// @dev keccak256 of the concatenated hashStruct(Reward) values (EIP-712 array
    ///      encoding) and the sum of amounts, in one pass over calldata. Rejects empty
    ///      batches, zero/dirty users, zero amounts and an overflowing sum.
    function _hashRewards(Reward[] calldata rewards) private pure returns (bytes32 rewardsHash, uint256 total) {
        uint256 count = rewards.length;
        if (count == 0) revert EmptyBatch();
        bytes32 rewardTypehash = REWARD_TYPEHASH;
        uint256 bad = type(uint256).max; // index of the first invalid line, if any
        bool overflow;
        assembly ("memory-safe") {
            let hashes := mload(0x40) // temporary: count words of hashes, then 3 words scratch
            let scratch := add(hashes, shl(5, count))
            mstore(scratch, rewardTypehash)
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                let p := add(rewards.offset, shl(6, i))
                let user := calldataload(p)
                let amount := calldataload(add(p, 0x20))
                // `if` is true for any non-zero value; keep the first bad index only
                if or(or(iszero(user), shr(160, user)), iszero(amount)) { if eq(bad, not(0)) { bad := i } }
                mstore(add(scratch, 0x20), user)
                mstore(add(scratch, 0x40), amount)
                mstore(add(hashes, shl(5, i)), keccak256(scratch, 0x60))
                total := add(total, amount)
                overflow := or(overflow, lt(total, amount))
            }
            rewardsHash := keccak256(hashes, shl(5, count))
        }
        if (bad != type(uint256).max) revert InvalidReward(bad);
        if (overflow) revert TotalOverflow();
    }
}
