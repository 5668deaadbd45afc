// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "./Test.sol";
import {MultiTokenPushPull} from "../../src/MultiTokenPushPull.sol";
import {ProductBank} from "../../src/ProductBank.sol";
import {ProductBankFactory} from "../../src/ProductBankFactory.sol";
import {TestToken} from "../../src/mocks/TestToken.sol";
import {Reward} from "../../src/interfaces/IMultiTokenPushPull.sol";

/// @dev Deployed system + an independent EIP-712 implementation used to sign batches.
abstract contract Fixture is Test {
    uint256 internal constant OWNER_KEY = 0xA11CE;
    uint256 internal constant DISTRIBUTOR_KEY = 0xD157;
    uint256 internal constant STRANGER_KEY = 0xBAD;
    bytes32 internal constant PRODUCT = keccak256("shop.example.com");
    bytes32 internal constant CAMPAIGN = bytes32(uint256(0xC0FFEE));
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant REWARD_TYPEHASH = keccak256("Reward(address user,uint256 amount)");
    bytes32 internal constant PUSH_TYPEHASH = keccak256(
        "PushRewards(bytes32 campaignId,address token,Reward[] rewards,bytes32 nonce,uint256 deadline)Reward(address user,uint256 amount)"
    );

    address internal owner;
    address internal distributor;
    address internal stranger;
    MultiTokenPushPull internal pushPull;
    ProductBankFactory internal factory;
    ProductBank internal bank;
    TestToken internal token;
    uint256 private _nonceCounter;

    function setUp() public virtual {
        owner = vm.addr(OWNER_KEY);
        distributor = vm.addr(DISTRIBUTOR_KEY);
        stranger = vm.addr(STRANGER_KEY);
        pushPull = new MultiTokenPushPull(owner);
        factory = new ProductBankFactory(address(pushPull));
        bank = _newBank(PRODUCT);
        token = new TestToken("Test", "TST", 18);
        token.mint(address(this), 1e36);
        token.approve(address(bank), type(uint256).max);
    }

    function _newBank(bytes32 productId) internal returns (ProductBank b) {
        b = ProductBank(factory.deployBank(productId, owner));
        vm.startPrank(owner);
        pushPull.authorizePusher(address(b));
        b.grantRole(b.DISTRIBUTOR_ROLE(), distributor);
        vm.stopPrank();
    }

    function _allocate(ProductBank b, bytes32 campaignId, address tok, uint256 budget) internal {
        vm.prank(owner);
        b.allocateCampaignBudget(campaignId, tok, budget);
    }

    function _fund(uint256 amount) internal {
        bank.deposit(address(token), amount);
    }

    function _rewards1(address user, uint256 amount) internal pure returns (Reward[] memory r) {
        r = new Reward[](1);
        r[0] = Reward(user, amount);
    }

    function _rewardsN(uint256 n, uint256 firstUser, uint256 amount) internal pure returns (Reward[] memory r) {
        r = new Reward[](n);
        for (uint256 i; i < n; ++i) {
            r[i] = Reward(address(uint160(firstUser + i)), amount);
        }
    }

    function _nextNonce() internal returns (bytes32) {
        return keccak256(abi.encode("nonce", ++_nonceCounter));
    }

    /// @dev EIP-712 digest computed from the spec, independently of the contract.
    function _digest(address b, bytes32 campaignId, address tok, Reward[] memory rewards, bytes32 nonce, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        bytes32[] memory hashes = new bytes32[](rewards.length);
        for (uint256 i; i < rewards.length; ++i) {
            hashes[i] = keccak256(abi.encode(REWARD_TYPEHASH, rewards[i].user, rewards[i].amount));
        }
        bytes32 structHash = keccak256(
            abi.encode(PUSH_TYPEHASH, campaignId, tok, keccak256(abi.encodePacked(hashes)), nonce, deadline)
        );
        bytes32 domain = keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("Frak.ProductBank"), keccak256("1"), block.chainid, b)
        );
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    function _sign(
        uint256 key,
        address b,
        bytes32 campaignId,
        address tok,
        Reward[] memory rewards,
        bytes32 nonce,
        uint256 deadline
    ) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, _digest(b, campaignId, tok, rewards, nonce, deadline));
        return abi.encodePacked(r, s, v);
    }

    /// @dev Signs with the distributor key and pushes a batch through `b`.
    function _push(ProductBank b, bytes32 campaignId, address tok, Reward[] memory rewards) internal returns (bytes32 nonce) {
        nonce = _nextNonce();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _sign(DISTRIBUTOR_KEY, address(b), campaignId, tok, rewards, nonce, deadline);
        b.pushRewards(campaignId, tok, rewards, nonce, deadline, sig);
    }
}
