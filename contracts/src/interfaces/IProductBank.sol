// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Reward} from "./IMultiTokenPushPull.sol";

/// @title IProductBank
/// @notice Per-product custody of reward funds, campaign budgets and signed reward pushes.
interface IProductBank {
    event FundsDeposited(address indexed token, address indexed depositor, uint256 amount);
    event FundsWithdrawn(address indexed token, address indexed recipient, uint256 amount);
    event CampaignBudgetAllocated(bytes32 indexed campaignId, address indexed token, uint256 budget);
    event CampaignDeactivated(bytes32 indexed campaignId);
    event RewardsPushed(bytes32 indexed campaignId, address indexed token, bytes32 nonce, uint256 total, uint256 count);

    error ZeroAddress();
    error ZeroAmount();
    error EmptyBatch();
    error BudgetTooLarge();
    error InsufficientAvailableBalance(uint256 available, uint256 required);
    error InsufficientBudget(uint256 remaining, uint256 required);
    error CampaignNotActive(bytes32 campaignId);
    error CampaignTokenMismatch(bytes32 campaignId, address token);
    error NonceAlreadyUsed(bytes32 nonce);
    error SignatureExpired(uint256 deadline);
    error InvalidSignature();
    error UnauthorizedSigner(address signer);
    error InvalidReward(uint256 index);
    error TotalOverflow();

    function deposit(address token, uint256 amount) external;
    function withdraw(address token, uint256 amount) external;
    function getAvailableBalance(address token) external view returns (uint256);

    function allocateCampaignBudget(bytes32 campaignId, address token, uint256 budget) external;
    function deactivateCampaign(bytes32 campaignId) external;
    function getCampaignBudget(bytes32 campaignId, address token) external view returns (uint256);
    function isCampaignActive(bytes32 campaignId) external view returns (bool);
    function isNonceUsed(bytes32 nonce) external view returns (bool);

    function pushRewards(
        bytes32 campaignId,
        address token,
        Reward[] calldata rewards,
        bytes32 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external;

    function pause() external;
    function unpause() external;
}
