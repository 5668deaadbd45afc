// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IMultiTokenPushPull, Reward} from "./interfaces/IMultiTokenPushPull.sol";

/// @title MultiTokenPushPull
/// @notice Authorized pushers (product banks) transfer tokens here and credit users;
///         users pull whatever is pending for them, in one or many tokens.
/// @dev Gas design: a user's entry per token is one slot holding cumulative `earned` and
///      `claimed` (both uint128). It never returns to zero after the first credit, so a
///      push to a returning user is a non-zero to non-zero write (~5,000 gas) rather than
///      a fresh 22,100-gas one. Funding is checked once per batch against the token balance.
contract MultiTokenPushPull is IMultiTokenPushPull, Ownable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @dev pending = earned - claimed. Packed in one slot.
    struct Account {
        uint128 earned;
        uint128 claimed;
    }

    mapping(address token => mapping(address user => Account)) private _accounts;
    mapping(address token => uint256) private _totalPending;
    mapping(address pusher => bool) private _pushers;

    /// @param owner_ The account allowed to authorize and revoke pushers.
    constructor(address owner_) Ownable(owner_) {}

    /// @notice Allows `pusher` (typically a ProductBank) to push rewards. Owner only.
    function authorizePusher(address pusher) external onlyOwner {
        if (pusher == address(0)) revert ZeroAddress();
        _pushers[pusher] = true;
        emit PusherAuthorized(pusher);
    }

    /// @notice Removes `pusher`'s right to push. Already pushed rewards stay claimable. Owner only.
    function revokePusher(address pusher) external onlyOwner {
        if (pusher == address(0)) revert ZeroAddress();
        _pushers[pusher] = false;
        emit PusherRevoked(pusher);
    }

    /// @notice Whether `pusher` may call `pushRewards`.
    function isPusherAuthorized(address pusher) external view returns (bool) {
        return _pushers[pusher];
    }

    /// @notice Credits each `rewards[i].user` with `rewards[i].amount` of `token`.
    /// @dev The caller must have transferred the batch total to this contract beforehand;
    ///      the batch reverts unless `balanceOf(this) >= totalPending` afterwards (one
    ///      balance check per batch). A fee-on-transfer shortfall therefore reverts.
    ///      Duplicate users in a batch are allowed and simply add up.
    /// @param token The ERC20 token of the batch.
    /// @param rewards Non-empty list of (user, amount), no zero user, no zero amount.
    function pushRewards(address token, Reward[] calldata rewards) external nonReentrant {
        if (!_pushers[msg.sender]) revert UnauthorizedPusher(msg.sender);
        if (token == address(0)) revert ZeroAddress();
        uint256 count = rewards.length;
        if (count == 0) revert EmptyBatch();

        uint256 total = _credit(token, rewards);
        uint256 required = _totalPending[token] + total;
        uint256 balance = IERC20(token).balanceOf(address(this));
        if (balance < required) revert InsufficientFunding(token, balance, required);
        _totalPending[token] = required;
    }

    /// @notice Sends the caller everything pending for them in `token`.
    /// @dev Reverts with `NothingToClaim` when nothing is pending.
    function pullReward(address token) external nonReentrant {
        if (_pull(token) == 0) revert NothingToClaim(token, msg.sender);
    }

    /// @notice Sends the caller everything pending in each of `tokens`.
    /// @dev Tokens with nothing pending (including repeated entries) are skipped.
    function pullRewards(address[] calldata tokens) external nonReentrant {
        uint256 count = tokens.length;
        for (uint256 i; i < count; ++i) {
            _pull(tokens[i]);
        }
    }

    /// @notice Amount of `token` that `user` can pull now.
    function getPendingAmount(address token, address user) public view returns (uint256) {
        Account memory a = _accounts[token][user];
        return a.earned - a.claimed;
    }

    /// @notice Pending amounts of `user` for each of `tokens`, in order.
    function getPendingAmounts(address[] calldata tokens, address user) external view returns (uint256[] memory amounts) {
        amounts = new uint256[](tokens.length);
        for (uint256 i; i < tokens.length; ++i) {
            amounts[i] = getPendingAmount(tokens[i], user);
        }
    }

    /// @notice Cumulative amounts of `token` credited to and claimed by `user`.
    function getAccount(address token, address user) external view returns (uint256 earned, uint256 claimed) {
        Account memory a = _accounts[token][user];
        return (a.earned, a.claimed);
    }

    /// @notice Sum of all pending amounts of `token`; never above this contract's balance.
    function getTotalPending(address token) external view returns (uint256) {
        return _totalPending[token];
    }

    /// @dev Adds every amount to its user's cumulative `earned` and emits RewardAdded, in
    ///      one assembly loop over calldata (this loop is the per-reward cost of a push).
    ///      Equivalent to: `_accounts[token][user].earned += amount; emit RewardAdded(...)`
    ///      with checks: user non-zero and clean, amount non-zero, earned and the batch
    ///      total fit in uint128. Returns the batch total.
    function _credit(address token, Reward[] calldata rewards) private returns (uint256 total) {
        bytes32 topic = RewardAdded.selector;
        bytes4 zeroAddress = ZeroAddress.selector;
        bytes4 zeroAmount = ZeroAmount.selector;
        bytes4 tooLarge = AmountTooLarge.selector;
        assembly ("memory-safe") {
            // 0x00: user / log data, 0x20: slot of _accounts[token]
            mstore(0x00, token)
            mstore(0x20, _accounts.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            let end := add(rewards.offset, shl(6, rewards.length))
            for { let p := rewards.offset } lt(p, end) { p := add(p, 0x40) } {
                let user := calldataload(p)
                let amount := calldataload(add(p, 0x20))
                if or(iszero(user), shr(160, user)) {
                    mstore(0x00, zeroAddress)
                    revert(0x00, 0x04)
                }
                if iszero(amount) {
                    mstore(0x00, zeroAmount)
                    revert(0x00, 0x04)
                }
                total := add(total, amount)
                mstore(0x00, user)
                let slot := keccak256(0x00, 0x40)
                let packed := sload(slot)
                // earned is the low 128 bits, claimed the high 128 bits
                let earned := add(and(packed, 0xffffffffffffffffffffffffffffffff), amount)
                // amount > 2^128 also lands here or in the total check below
                if or(shr(128, earned), lt(total, amount)) {
                    mstore(0x00, tooLarge)
                    revert(0x00, 0x04)
                }
                sstore(slot, or(and(packed, not(0xffffffffffffffffffffffffffffffff)), earned))
                mstore(0x00, amount)
                log4(0x00, 0x20, topic, token, user, caller())
            }
            if shr(128, total) {
                mstore(0x00, tooLarge)
                revert(0x00, 0x04)
            }
        }
    }

    /// @dev Effects before the transfer; callers hold the reentrancy lock.
    function _pull(address token) private returns (uint256 pending) {
        Account storage account = _accounts[token][msg.sender];
        uint128 earned = account.earned;
        pending = earned - account.claimed;
        if (pending == 0) return 0;
        account.claimed = earned;
        _totalPending[token] -= pending;
        IERC20(token).safeTransfer(msg.sender, pending);
        emit RewardClaimed(token, msg.sender, pending);
    }
}
