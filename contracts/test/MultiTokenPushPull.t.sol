// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {MultiTokenPushPull} from "../src/MultiTokenPushPull.sol";
import {IMultiTokenPushPull, Reward} from "../src/interfaces/IMultiTokenPushPull.sol";
import {TestToken} from "../src/mocks/TestToken.sol";
import {NoReturnToken, FalseReturnToken, FeeOnTransferToken, HookToken} from "./mocks/Tokens.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

interface IMintable {
    function mint(address to, uint256 amount) external;
    function transfer(address to, uint256 amount) external;
    function balanceOf(address) external view returns (uint256);
}

/// @dev Claims from inside a token's transfer hook, either letting the guard's revert
///      bubble up or catching it and recording that it happened.
contract Reenterer {
    MultiTokenPushPull internal immutable pp;
    address internal immutable tok;
    bool public catchIt;
    bool public blocked;

    constructor(MultiTokenPushPull pp_, address tok_) {
        pp = pp_;
        tok = tok_;
    }

    function setCatch(bool c) external {
        catchIt = c;
    }

    function claim() external {
        pp.pullReward(tok);
    }

    function claimMany(address[] calldata tokens) external {
        pp.pullRewards(tokens);
    }

    /// @dev Called by HookToken during the transfer to this contract.
    function reenter() external {
        if (!catchIt) {
            pp.pullReward(tok);
            return;
        }
        try pp.pullReward(tok) {} catch (bytes memory err) {
            blocked = bytes4(err) == ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector;
        }
    }
}

contract MultiTokenPushPullTest is Test {
    event RewardAdded(address indexed token, address indexed user, address indexed emitter, uint256 amount);
    event RewardClaimed(address indexed token, address indexed user, uint256 amount);
    event PusherAuthorized(address indexed pusher);
    event PusherRevoked(address indexed pusher);

    address internal constant OWNER = address(0x0A);
    address internal constant PUSHER = address(0x9B);
    address internal constant ALICE = address(0xA1);
    address internal constant BOB = address(0xB0B);

    MultiTokenPushPull internal pp;
    TestToken internal tokenA;
    TestToken internal tokenB;

    function setUp() public {
        pp = new MultiTokenPushPull(OWNER);
        vm.prank(OWNER);
        pp.authorizePusher(PUSHER);
        tokenA = new TestToken("A", "A", 18);
        tokenB = new TestToken("B", "B", 6);
    }

    /// @dev What a bank does: transfer first, then push.
    function _fundAndPush(address tok, address user, uint256 amount) internal {
        IMintable(tok).mint(address(pp), amount);
        Reward[] memory r = new Reward[](1);
        r[0] = Reward(user, amount);
        vm.prank(PUSHER);
        pp.pushRewards(tok, r);
    }

    // ------------------------------------------------------------- pushers

    function test_constructor_zeroOwnerReverts() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new MultiTokenPushPull(address(0));
    }

    function test_authorizeAndRevoke_emitAndToggle() public {
        address p = address(0x1234);
        vm.expectEmit(true, false, false, false, address(pp));
        emit PusherAuthorized(p);
        vm.prank(OWNER);
        pp.authorizePusher(p);
        assertTrue(pp.isPusherAuthorized(p));
        vm.expectEmit(true, false, false, false, address(pp));
        emit PusherRevoked(p);
        vm.prank(OWNER);
        pp.revokePusher(p);
        assertFalse(pp.isPusherAuthorized(p));
    }

    function test_authorizeAndRevoke_reverts() public {
        vm.startPrank(ALICE);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, ALICE));
        pp.authorizePusher(ALICE);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, ALICE));
        pp.revokePusher(PUSHER);
        vm.stopPrank();
        vm.startPrank(OWNER);
        vm.expectRevert(IMultiTokenPushPull.ZeroAddress.selector);
        pp.authorizePusher(address(0));
        vm.expectRevert(IMultiTokenPushPull.ZeroAddress.selector);
        pp.revokePusher(address(0));
        vm.stopPrank();
    }

    // ---------------------------------------------------------------- push

    function test_push_creditsAndEmits() public {
        tokenA.mint(address(pp), 10e18);
        Reward[] memory r = new Reward[](3);
        r[0] = Reward(ALICE, 2e18);
        r[1] = Reward(BOB, 5e18);
        r[2] = Reward(ALICE, 3e18);
        for (uint256 i; i < 3; ++i) {
            vm.expectEmit(true, true, true, true, address(pp));
            emit RewardAdded(address(tokenA), r[i].user, PUSHER, r[i].amount);
        }
        vm.prank(PUSHER);
        pp.pushRewards(address(tokenA), r);
        assertEq(pp.getPendingAmount(address(tokenA), ALICE), 5e18);
        assertEq(pp.getPendingAmount(address(tokenA), BOB), 5e18);
        assertEq(pp.getTotalPending(address(tokenA)), 10e18);
        (uint256 earned, uint256 claimed) = pp.getAccount(address(tokenA), ALICE);
        assertEq(earned, 5e18);
        assertEq(claimed, 0);
    }

    function test_push_reverts() public {
        Reward[] memory r = new Reward[](1);
        r[0] = Reward(ALICE, 1);
        vm.prank(ALICE);
        vm.expectRevert(abi.encodeWithSelector(IMultiTokenPushPull.UnauthorizedPusher.selector, ALICE));
        pp.pushRewards(address(tokenA), r);

        vm.startPrank(PUSHER);
        vm.expectRevert(IMultiTokenPushPull.ZeroAddress.selector);
        pp.pushRewards(address(0), r);
        vm.expectRevert(IMultiTokenPushPull.EmptyBatch.selector);
        pp.pushRewards(address(tokenA), new Reward[](0));
        vm.expectRevert(
            abi.encodeWithSelector(IMultiTokenPushPull.InsufficientFunding.selector, address(tokenA), 0, 1)
        );
        pp.pushRewards(address(tokenA), r);
        r[0].user = address(0);
        vm.expectRevert(IMultiTokenPushPull.ZeroAddress.selector);
        pp.pushRewards(address(tokenA), r);
        r[0] = Reward(ALICE, 0);
        vm.expectRevert(IMultiTokenPushPull.ZeroAmount.selector);
        pp.pushRewards(address(tokenA), r);
        r[0].amount = uint256(type(uint128).max) + 1;
        vm.expectRevert(IMultiTokenPushPull.AmountTooLarge.selector);
        pp.pushRewards(address(tokenA), r);
        vm.stopPrank();
    }

    function test_push_revokedPusherReverts() public {
        vm.prank(OWNER);
        pp.revokePusher(PUSHER);
        tokenA.mint(address(pp), 1);
        Reward[] memory r = new Reward[](1);
        r[0] = Reward(ALICE, 1);
        vm.prank(PUSHER);
        vm.expectRevert(abi.encodeWithSelector(IMultiTokenPushPull.UnauthorizedPusher.selector, PUSHER));
        pp.pushRewards(address(tokenA), r);
    }

    function test_push_existingPendingMustStayCovered() public {
        _fundAndPush(address(tokenA), ALICE, 10e18);
        // no new funds: the same balance cannot back a second credit
        Reward[] memory r = new Reward[](1);
        r[0] = Reward(BOB, 1);
        vm.prank(PUSHER);
        vm.expectRevert(
            abi.encodeWithSelector(IMultiTokenPushPull.InsufficientFunding.selector, address(tokenA), 10e18, 10e18 + 1)
        );
        pp.pushRewards(address(tokenA), r);
    }

    function test_push_donationsCanBackCredits() public {
        tokenA.mint(address(pp), 5e18); // direct donation
        Reward[] memory r = new Reward[](1);
        r[0] = Reward(ALICE, 5e18);
        vm.prank(PUSHER);
        pp.pushRewards(address(tokenA), r);
        assertEq(pp.getTotalPending(address(tokenA)), 5e18);
    }

    function test_push_feeOnTransferShortfallReverts() public {
        FeeOnTransferToken fee = new FeeOnTransferToken(100);
        fee.mint(PUSHER, 100e18);
        vm.prank(PUSHER);
        fee.transfer(address(pp), 100e18); // 99e18 arrive
        Reward[] memory r = new Reward[](1);
        r[0] = Reward(ALICE, 100e18);
        vm.prank(PUSHER);
        vm.expectRevert(
            abi.encodeWithSelector(IMultiTokenPushPull.InsufficientFunding.selector, address(fee), 99e18, 100e18)
        );
        pp.pushRewards(address(fee), r);
    }

    // ---------------------------------------------------------------- pull

    function test_pullReward_paysAndEmits() public {
        _fundAndPush(address(tokenA), ALICE, 7e18);
        vm.expectEmit(true, true, false, true, address(pp));
        emit RewardClaimed(address(tokenA), ALICE, 7e18);
        vm.prank(ALICE);
        pp.pullReward(address(tokenA));
        assertEq(tokenA.balanceOf(ALICE), 7e18);
        assertEq(pp.getPendingAmount(address(tokenA), ALICE), 0);
        assertEq(pp.getTotalPending(address(tokenA)), 0);
        (uint256 earned, uint256 claimed) = pp.getAccount(address(tokenA), ALICE);
        assertEq(earned, 7e18);
        assertEq(claimed, 7e18);
    }

    function test_pullReward_nothingToClaimReverts() public {
        vm.prank(ALICE);
        vm.expectRevert(abi.encodeWithSelector(IMultiTokenPushPull.NothingToClaim.selector, address(tokenA), ALICE));
        pp.pullReward(address(tokenA));
        _fundAndPush(address(tokenA), ALICE, 1);
        vm.startPrank(ALICE);
        pp.pullReward(address(tokenA));
        vm.expectRevert(abi.encodeWithSelector(IMultiTokenPushPull.NothingToClaim.selector, address(tokenA), ALICE));
        pp.pullReward(address(tokenA));
        vm.stopPrank();
    }

    function test_pullReward_onlyNewAfterReturningPush() public {
        _fundAndPush(address(tokenA), ALICE, 2e18);
        vm.prank(ALICE);
        pp.pullReward(address(tokenA));
        _fundAndPush(address(tokenA), ALICE, 3e18);
        assertEq(pp.getPendingAmount(address(tokenA), ALICE), 3e18);
        vm.prank(ALICE);
        pp.pullReward(address(tokenA));
        assertEq(tokenA.balanceOf(ALICE), 5e18);
    }

    function test_pullRewards_multipleTokensAndDuplicates() public {
        _fundAndPush(address(tokenA), ALICE, 2e18);
        _fundAndPush(address(tokenB), ALICE, 3e6);
        address[] memory tokens = new address[](4);
        tokens[0] = address(tokenA);
        tokens[1] = address(tokenB);
        tokens[2] = address(tokenA); // duplicate: harmless
        tokens[3] = address(0xDEAD); // nothing pending: skipped
        uint256[] memory pending = pp.getPendingAmounts(tokens, ALICE);
        assertEq(pending[0], 2e18);
        assertEq(pending[1], 3e6);
        assertEq(pending[2], 2e18);
        assertEq(pending[3], 0);

        vm.expectEmit(true, true, false, true, address(pp));
        emit RewardClaimed(address(tokenA), ALICE, 2e18);
        vm.expectEmit(true, true, false, true, address(pp));
        emit RewardClaimed(address(tokenB), ALICE, 3e6);
        vm.prank(ALICE);
        pp.pullRewards(tokens);
        assertEq(tokenA.balanceOf(ALICE), 2e18);
        assertEq(tokenB.balanceOf(ALICE), 3e6);
        assertEq(pp.getTotalPending(address(tokenA)), 0);
        assertEq(pp.getTotalPending(address(tokenB)), 0);
        vm.prank(ALICE);
        pp.pullRewards(tokens); // nothing left: no-op
        vm.prank(ALICE);
        pp.pullRewards(new address[](0));
    }

    function test_noReturnToken_pushAndClaim() public {
        NoReturnToken usdt = new NoReturnToken();
        _fundAndPush(address(usdt), ALICE, 100e6);
        vm.prank(ALICE);
        pp.pullReward(address(usdt));
        assertEq(usdt.balanceOf(ALICE), 100e6);
    }

    function test_falseReturningTokenClaimReverts() public {
        FalseReturnToken bad = new FalseReturnToken();
        _fundAndPush(address(bad), ALICE, 1e18);
        bad.setFailing(true);
        vm.prank(ALICE);
        vm.expectRevert(abi.encodeWithSelector(SafeERC20.SafeERC20FailedOperation.selector, address(bad)));
        pp.pullReward(address(bad));
        assertEq(pp.getPendingAmount(address(bad), ALICE), 1e18); // rolled back, still claimable
    }

    // ----------------------------------------------------------- reentrancy

    function _hooked() internal returns (HookToken hook, Reenterer attacker) {
        hook = new HookToken();
        attacker = new Reenterer(pp, address(hook));
        _fundAndPush(address(hook), address(attacker), 5e18);
        hook.mint(address(pp), 5e18); // extra balance an attacker would like to drain
        hook.setHook(address(attacker), abi.encodeCall(Reenterer.reenter, ()));
    }

    function test_reentrancy_pullRewardBlocked() public {
        (HookToken hook, Reenterer attacker) = _hooked();
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        attacker.claim();
        attacker.setCatch(true);
        attacker.claim();
        assertTrue(attacker.blocked());
        assertEq(hook.balanceOf(address(attacker)), 5e18); // paid exactly once
        assertEq(pp.getPendingAmount(address(hook), address(attacker)), 0);
        assertGe(hook.balanceOf(address(pp)), pp.getTotalPending(address(hook)), "solvent");
    }

    function test_reentrancy_pullRewardsBlocked() public {
        (HookToken hook, Reenterer attacker) = _hooked();
        address[] memory tokens = new address[](2);
        tokens[0] = address(hook);
        tokens[1] = address(hook);
        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        attacker.claimMany(tokens);
        attacker.setCatch(true);
        attacker.claimMany(tokens);
        assertEq(hook.balanceOf(address(attacker)), 5e18);
    }

    // ----------------------------------------------------------------- fuzz

    function testFuzz_pushThenClaimAll(uint128[4] memory amounts, uint8 claimMask) public {
        address[4] memory users = [ALICE, BOB, address(0xC0), ALICE];
        uint256 total;
        Reward[] memory r = new Reward[](4);
        for (uint256 i; i < 4; ++i) {
            uint256 a = bound(amounts[i], 1, 1e30);
            r[i] = Reward(users[i], a);
            total += a;
        }
        tokenA.mint(address(pp), total);
        vm.prank(PUSHER);
        pp.pushRewards(address(tokenA), r);
        assertEq(pp.getTotalPending(address(tokenA)), total);
        uint256 claimed;
        for (uint256 i; i < 3; ++i) {
            if (claimMask & (1 << i) == 0) continue;
            uint256 p = pp.getPendingAmount(address(tokenA), users[i]);
            vm.prank(users[i]);
            pp.pullReward(address(tokenA));
            claimed += p;
        }
        assertEq(pp.getTotalPending(address(tokenA)), total - claimed);
        assertGe(tokenA.balanceOf(address(pp)), pp.getTotalPending(address(tokenA)), "solvent");
    }

    function testFuzz_earnedOverflowReverts(uint128 first) public {
        vm.assume(first > 0);
        _fundAndPush(address(tokenA), ALICE, first);
        uint256 second = uint256(type(uint128).max) - first + 1;
        tokenA.mint(address(pp), second);
        Reward[] memory r = new Reward[](1);
        r[0] = Reward(ALICE, second);
        vm.prank(PUSHER);
        vm.expectRevert(); // checked arithmetic on the uint128 cumulative
        pp.pushRewards(address(tokenA), r);
    }
}
